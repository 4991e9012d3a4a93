"""Typed configuration fields: every key has a type, a default and a one-line description.

A section is a frozen dataclass whose fields are made with :func:`opt`. The loader
(:mod:`proxy.config.loader`) converts TOML values with :func:`convert`, which knows the
value kinds below; the docs generator (:mod:`proxy.config.docs`) reads the same metadata,
so a key cannot exist without its default and description.

Kinds:
    ``duration``  float seconds; accepts ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"`` or a number
    ``size``      int bytes; accepts ``"512"``, ``"64K"``, ``"25M"``, ``"1G"`` or a number
    ``hostport``  ``"host:port"`` / ``"[v6]:port"``
    ``cidrs``     list of networks (``"192.0.2.0/24"``, ``"2001:db8::/32"``, bare addresses)
    anything else is checked against the field's Python type.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class ConfigError(ValueError):
    """A configuration value is invalid; ``path`` names the key (``limits.max_recipients``)."""

    def __init__(self, path: str, message: str, source: str = "") -> None:
        self.path = path
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path}: {message}")


def opt(
    default: Any,
    doc: str,
    *,
    kind: str = "",
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
) -> Any:
    """A documented configuration field. Mutable defaults are copied per instance."""
    meta = {"doc": doc, "kind": kind, "choices": choices, "minimum": minimum, "shown": default}
    if kind == "duration":
        default = parse_duration(default, "(default)")
    elif kind == "size":
        default = parse_size(default, "(default)")
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value)


def parse_duration(value: object, path: str = "") -> float:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ConfigError(path, f"expected a duration like '30s', '5m' or '250ms', got {value!r}")


def parse_size(value: object, path: str = "") -> int:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a size like '25M', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").upper().rstrip("B").rstrip("I") or ""
            return int(m.group(1)) * _SIZE_UNITS[unit or ""]
    raise ConfigError(path, f"expected a size like '25M', '64K' or a byte count, got {value!r}")


def parse_hostport(value: object, path: str = "", *, default_port: int = 25) -> tuple[str, int]:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected 'host:port', got {value!r}")
    host, port = value, str(default_port)
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(path, f"unterminated IPv6 literal in {value!r}")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(path, f"expected '[addr]:port', got {value!r}")
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    elif value.count(":") > 1:
        raise ConfigError(path, f"write IPv6 addresses as '[addr]:port', got {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(path, f"invalid port in {value!r}")
    return host, int(port)


def parse_networks(value: object, path: str = "") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of networks, got {value!r}")
    nets = []
    for i, item in enumerate(value):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{path}[{i}]", str(exc)) from None
    return nets


def _check_type(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(path, f"must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(value, arg, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(path, " or ".join(errors))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {value!r}")
        (arg,) = get_args(tp) or (Any,)
        return [_check_type(v, arg, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {value!r}")
        _, varg = get_args(tp) or (str, Any)
        return {str(k): _check_type(v, varg, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, f"expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {value!r}")
        return build(tp, value, path)
    raise ConfigError(path, f"unsupported type {tp!r}")


def convert(f: dataclasses.Field[Any], tp: Any, value: Any, path: str) -> Any:
    """Convert and validate one TOML value for field ``f`` of resolved type ``tp``."""
    kind = f.metadata.get("kind", "")
    if kind == "duration":
        out: Any = parse_duration(value, path)
    elif kind == "size":
        out = parse_size(value, path)
    elif kind == "hostport":
        if value == "":
            out = ""
        else:
            parse_hostport(value, path)
            out = value
    elif kind == "hostports":
        out = _check_type(value, list[str], path)
        for i, v in enumerate(out):
            parse_hostport(v, f"{path}[{i}]")
    elif kind == "cidrs":
        out = _check_type(value, list[str], path)
        parse_networks(out, path)
    else:
        out = _check_type(value, tp, path)
    choices = f.metadata.get("choices") or ()
    if choices and out not in choices:
        raise ConfigError(path, f"must be one of {', '.join(map(repr, choices))}, got {out!r}")
    minimum = f.metadata.get("minimum")
    if minimum is not None and isinstance(out, int | float) and out < minimum:
        raise ConfigError(path, f"must be at least {minimum}, got {out!r}")
    return out


_hints_cache: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    cached = _hints_cache.get(cls)
    if cached is None:
        cached = _hints_cache[cls] = typing.get_type_hints(cls)
    return cached


def build(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build section ``cls`` from a TOML table; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(path or "(top)", f"expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    tps = hints(cls)
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(sub, f"unknown key (known keys here: {known})")
        custom: Callable[[Any, str], Any] | None = f.metadata.get("build")
        kwargs[key] = custom(value, sub) if custom else convert(f, tps[key], value, sub)
    return cls(**kwargs)


def to_plain(obj: Any) -> Any:
    """A section as plain TOML-able data (for show-config)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj
