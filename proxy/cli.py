"""Command line: ``spamgate run | check-config | show-config | docs``.

spamgate run [--config FILE] [--listen HOST:PORT ...] [--downstream HOST:PORT]
spamgate check-config [--config FILE]     validate config and rules; errors name the key
spamgate show-config [--config FILE] [--defaults]
spamgate docs config|symbols              the generated reference pages
spamgate explain --ip A --helo H --from S --rcpt R [--message F] [--json]   dry-run the verdict
spamgate explain --ref REF [--log FILE]   a past transaction from the log
spamgate state list|clear ...             penalty box and recipient cache (proxy/operator_cli.py)
spamgate feed export [--format zone|text|json] [--output FILE]
"""

from __future__ import annotations

import argparse
import gc
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
    from proxy.app import load_policy_rules
    from proxy.listener import serve
    from proxy.observability.logging import setup
    from proxy.session.runtime import build_tls_context

    def reload_config() -> Any:
        return load(args.config, overrides=_overrides(args))

    try:
        config = reload_config()
        load_policy_rules(config)
        build_tls_context(config)
    except (ConfigError, RulesError, OSError) as exc:
        print(f"spamgate: {exc}", file=sys.stderr)
        return 2
    setup(config.log)
    gc.freeze()  # what run imported and loaded since main() froze the rest (see main)
    return serve(config, reload_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Build the whole generation as start would (rules, certificates) and start its checks
    (list files are read there), so whatever start would refuse is refused here."""
    import asyncio

    from proxy.app import build_generation, start_generation, stop_generation

    async def start_and_stop() -> None:
        gen = build_generation(config)
        try:
            await start_generation(gen)
        finally:
            await stop_generation(gen)

    try:
        config = load(args.config)
        gen = build_generation(config)
        asyncio.run(start_and_stop())
    except (ConfigError, RulesError, OSError, ValueError) as exc:
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


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from proxy import explain
    from proxy.app import load_policy_rules

    try:
        config = load(args.config)
        rules = load_policy_rules(config)
    except (ConfigError, RulesError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ref:
        log_file = args.log or config.log.file
        if not log_file:
            print("error: no log file: give --log FILE or set log.file", file=sys.stderr)
            return 2
        try:
            lines = explain.find_ref(log_file, args.ref)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not lines:
            print(f"no log line with ref {args.ref} in {log_file}", file=sys.stderr)
            return 1
        if args.json:
            sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
        else:
            sys.stdout.write("\n".join(explain.render_log_line(line, rules) for line in lines))
        return 0
    missing = [n for n in ("ip", "helo", "mail_from", "rcpt") if getattr(args, n) is None]
    if missing:
        print("error: give --ref, or --ip, --helo, --from and --rcpt", file=sys.stderr)
        return 2
    try:
        message = open(args.message, "rb").read() if args.message else None  # noqa: SIM115
        ex = asyncio.run(
            explain.simulate(
                config,
                ip=args.ip,
                helo=args.helo,
                mail_from=args.mail_from,
                rcpts=args.rcpt,
                message=message,
            )
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(explain.to_dict(ex, rules), indent=2) + "\n")
    else:
        sys.stdout.write(explain.render_text(ex, rules))
    return 0


def cmd_console_password(args: argparse.Namespace) -> int:
    """Print the hash of a console password (read from stdin with --stdin, else prompted)."""
    import getpass

    from proxy.console.passwords import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != password:
            sys.stderr.write("the passwords differ\n")
            return 2
    if len(password) < 8:
        sys.stderr.write("use at least 8 characters\n")
        return 2
    sys.stdout.write(hash_password(password) + "\n")
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
    ex = sub.add_parser("explain", help="show the symbols, score and reply for an envelope, or a past ref")
    ex.add_argument("--config")
    ex.add_argument("--ip", help="client address")
    ex.add_argument("--helo", help="HELO/EHLO name")
    ex.add_argument("--from", dest="mail_from", help="envelope sender ('' for <>)")
    ex.add_argument("--rcpt", action="append", help="recipient (repeatable)")
    ex.add_argument("--message", help="message file (.eml) to run the DATA checks on")
    ex.add_argument("--ref", help="find a past transaction or connection by its ref in the log")
    ex.add_argument("--log", help="log file for --ref (default: log.file of the configuration)")
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    ex.set_defaults(func=cmd_explain)
    pw = sub.add_parser("console-password", help="print the hash of a console password for [console]")
    pw.add_argument("--stdin", action="store_true", help="read the password from standard input")
    pw.set_defaults(func=cmd_console_password)
    from proxy.operator_cli import add_parsers

    add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # The modules, classes and tables imported so far live as long as the process: out of the
    # cyclic collector's sight (gc.freeze), no collection walks them again, neither while
    # serving nor at exit, where the final collections over them cost ~0.1-0.2 s of CPU (every
    # CLI run and every stop of the server). Only objects that exist now are frozen.
    gc.freeze()
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
