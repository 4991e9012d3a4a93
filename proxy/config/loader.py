"""Load the configuration: defaults, then the TOML file, then environment overrides.

File: ``--config FILE`` or ``$SPAMGATE_CONFIG``; no file means the embedded defaults.
Environment (for containers), applied last:

- ``SPAMGATE_LISTEN``       server.listen (comma-separated)
- ``SPAMGATE_DOWNSTREAM``   relay.downstream
- ``SPAMGATE_HOSTNAME``     server.hostname
- ``SPAMGATE_MODE``         server.mode
- ``SPAMGATE_LOCAL_DOMAINS`` relay.local_domains (comma-separated)
- ``SPAMGATE_WORKERS``      server.workers
- ``SPAMGATE__<SECTION>__<KEY>=value`` any key (``SPAMGATE__LIMITS__MAX_RECIPIENTS=50``,
  ``SPAMGATE__CHECKS__HELO_SYNTAX__MODE=observe``); the value is read as a TOML value when it
  parses as one, else as a string.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.checks.registry import MANDATORY, by_name
from proxy.config.fields import ConfigError, build
from proxy.config.schema import CORE_SECTIONS, Config

ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "SPAMGATE_LISTEN": ("server", "listen"),
    "SPAMGATE_DOWNSTREAM": ("relay", "downstream"),
    "SPAMGATE_HOSTNAME": ("server", "hostname"),
    "SPAMGATE_MODE": ("server", "mode"),
    "SPAMGATE_LOCAL_DOMAINS": ("relay", "local_domains"),
    "SPAMGATE_WORKERS": ("server", "workers"),
}
_LIST_KEYS = {("server", "listen"), ("relay", "local_domains")}


def _env_value(raw: str, path: tuple[str, ...]) -> Any:
    if path in _LIST_KEYS:
        return [v.strip() for v in raw.split(",") if v.strip()]
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(path), "cannot override: parent is not a table")
    node[path[-1]] = value


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, path in ENV_ALIASES.items():
        if name in env:
            _set(data, path, _env_value(env[name], path))
    for name, raw in env.items():
        if name.startswith("SPAMGATE__"):
            path = tuple(p.lower() for p in name[len("SPAMGATE__") :].split("__") if p)
            if path:
                _set(data, path, _env_value(raw, path))


def from_dict(data: dict[str, Any], source: str = "") -> Config:
    try:
        return _from_dict(data)
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.path, exc.message, source) from None
        raise


def _from_dict(data: dict[str, Any]) -> Config:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "checks":
            continue
        cls = CORE_SECTIONS.get(key)
        if cls is None:
            known = ", ".join(sorted([*CORE_SECTIONS, "checks"]))
            raise ConfigError(key, f"unknown section (known: {known})")
        kwargs[key] = build(cls, value, key)
    server = kwargs.get("server")
    if server is not None and isinstance(server.workers, str) and server.workers != "auto":
        raise ConfigError("server.workers", f"must be a number or 'auto', got {server.workers!r}")
    checks_data = data.get("checks", {})
    if not isinstance(checks_data, dict):
        raise ConfigError("checks", "expected a table of [checks.<name>] tables")
    registry = by_name()
    checks: dict[str, Any] = {}
    for name in checks_data:
        if name not in registry:
            raise ConfigError(f"checks.{name}", f"unknown check (known: {', '.join(sorted(registry))})")
    for name, cls in registry.items():
        opts = build(cls.Options, checks_data.get(name, {}), f"checks.{name}")
        if name in MANDATORY and (not opts.enabled or opts.mode != "enforce"):
            raise ConfigError(
                f"checks.{name}", "relay control is always on and enforced (never an open relay)"
            )
        checks[name] = opts
    return Config(**kwargs, checks=checks)


def load(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Config:
    """Defaults < file < environment < ``overrides`` (command-line flags)."""
    env = os.environ if env is None else env
    path = path or env.get("SPAMGATE_CONFIG") or None
    data: dict[str, Any] = {}
    source = "(defaults)"
    if path:
        source = path
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("(file)", "no such file", path) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(syntax)", str(exc), path) from None
    apply_env(data, env)
    for key_path, value in (overrides or {}).items():
        _set(data, key_path, value)
    cfg = from_dict(data, source)
    object.__setattr__(cfg, "source", source)
    return cfg
