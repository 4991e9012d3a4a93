"""``[store]``: where shared state lives (greylisting, rate limits, reputation, pass cache)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proxy.config.fields import ConfigError, opt

SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+sentinel", "redis+cluster", "unix")


def _build_url(value: Any, path: str) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ConfigError(path, f"expected a store URL like 'sqlite:///var/state.db', got {value!r}")
    scheme = value.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(path, f"unsupported store {scheme!r} (known: {', '.join(SCHEMES)})")
    if scheme == "redis+sentinel" and value.split("://", 1)[1].rstrip("/").count("/") < 1:
        raise ConfigError(path, "redis+sentinel:// needs the service name: redis+sentinel://h:p,h:p/service")
    return value


def _url_opt(default: str, doc: str) -> Any:
    f = opt(default, doc)
    return dataclasses.field(default=default, metadata={**f.metadata, "build": _build_url})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = _url_opt(
        "sqlite:///var/state.db",
        "State backend: 'memory://', 'sqlite:///path' (one host), 'redis://', 'rediss://', "
        "'redis+sentinel://h:p,h:p/service', 'redis+cluster://h:p,h:p'. 'sqlite:///var/state.db' is "
        "relative to the working directory (make run: ./var/ of the checkout); 'sqlite:////abs/path' is "
        "absolute: deploy/install.sh writes sqlite:////var/lib/spamgate/state.db.",
    )
    timeout: float = opt(
        "500ms", "Timeout of one store call; past it the check emits a temperror symbol.", kind="duration"
    )
    down_backoff: float = opt(
        "1s",
        "After a failed call, store calls fail at once for this long (no timeout wait per call); 0: off.",
        kind="duration",
    )
    prefix: str = opt("sg:", "Prefix of every key (several deployments may share one Redis).")
    memory_max_keys: int = opt(
        200000, "memory:// only: most keys kept; the oldest are dropped beyond it.", minimum=100
    )
    purge_interval: float = opt("5m", "sqlite:// only: how often expired rows are deleted.", kind="duration")
    password: str = opt("", "Redis password (also for Sentinel) when the URL carries none.")
