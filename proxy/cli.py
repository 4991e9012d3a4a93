"""Command line: ``spamgate run | check-config | show-config | docs``.

spamgate run [--config FILE] [--listen HOST:PORT ...] [--downstream HOST:PORT]
spamgate check-config [--config FILE]     validate config and rules; errors name the key
spamgate show-config [--config FILE] [--defaults]
spamgate docs config|symbols              the generated reference pages
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from proxy.config import toml_out
from proxy.config.fields import ConfigError, to_plain
from proxy.config.loader import from_dict, load
from proxy.policy.rules import RulesError


def _overrides(args: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    if getattr(args, "listen", None):
        out[("server", "listen")] = args.listen
    if getattr(args, "downstream", None) is not None:
        out[("relay", "downstream")] = args.downstream
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from proxy.app import build_generation
    from proxy.listener import serve
    from proxy.observability.logging import setup

    def reload_config() -> Any:
        return load(args.config, overrides=_overrides(args))

    try:
        config = reload_config()
        build_generation(config)  # rules and certificates: refuse to start on a broken one
    except (ConfigError, RulesError, OSError) as exc:
        print(f"spamgate: {exc}", file=sys.stderr)
        return 2
    setup(config.log)
    return serve(config, reload_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Build and start the whole generation (rules, list files, certificates), then stop it:
    whatever would make ``run`` or a reload refuse the configuration fails here too."""
    import asyncio

    from proxy.app import build_generation, start_generation, stop_generation
    from proxy.session.runtime import Generation

    async def build(config: Any) -> Generation:
        gen = build_generation(config)
        try:
            await start_generation(gen)
        finally:
            await stop_generation(gen)
        return gen

    source = args.config or "(defaults)"
    try:
        config = load(args.config)
        source = config.source
        gen = asyncio.run(build(config))
    except ConfigError as exc:
        print(f"error: {exc if exc.source else ConfigError(exc.path, exc.message, source)}", file=sys.stderr)
        return 1
    except (RulesError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {config.source}; rules: {', '.join(gen.policy.rules.sources)}")
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    try:
        config = from_dict({}) if args.defaults else load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = to_plain(config)
    data.pop("source", None)
    sys.stdout.write(toml_out.dumps(data))
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from proxy.app import load_policy_rules
    from proxy.config.docs import config_markdown, symbols_markdown

    if args.what == "config":
        sys.stdout.write(config_markdown())
    else:
        sys.stdout.write(symbols_markdown(load_policy_rules(from_dict({}))))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spamgate", description="In-session SMTP filtering proxy.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy until SIGTERM")
    run.add_argument("--config", help="TOML file (default: $SPAMGATE_CONFIG, else built-in defaults)")
    run.add_argument("--listen", action="append", metavar="HOST:PORT", help="listen address (repeatable)")
    run.add_argument("--downstream", metavar="HOST:PORT", help="mail server to relay to")
    run.set_defaults(func=cmd_run)
    chk = sub.add_parser("check-config", help="validate a configuration and the rules it uses")
    chk.add_argument("--config")
    chk.set_defaults(func=cmd_check_config)
    show = sub.add_parser("show-config", help="print the effective configuration as TOML")
    show.add_argument("--config")
    show.add_argument("--defaults", action="store_true", help="print the built-in defaults")
    show.set_defaults(func=cmd_show_config)
    docs = sub.add_parser("docs", help="print a generated reference page (Markdown)")
    docs.add_argument("what", choices=("config", "symbols"))
    docs.set_defaults(func=cmd_docs)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
