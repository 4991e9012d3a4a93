"""``[store]``: where shared state lives (greylisting, rate limits, reputation, pass cache)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = opt(
        "sqlite:///var/state.db",
        "State backend: 'memory://', 'sqlite:///path' (one host), 'redis://', 'rediss://', "
        "'redis+sentinel://h:p,h:p/service', 'redis+cluster://h:p,h:p'.",
    )
    timeout: float = opt(
        "500ms", "Timeout of one store call; past it the check emits a temperror symbol.", kind="duration"
    )
    prefix: str = opt("sg:", "Prefix of every key (several deployments may share one Redis).")
    memory_max_keys: int = opt(
        200000, "memory:// only: most keys kept; the oldest are dropped beyond it.", minimum=100
    )
    purge_interval: float = opt("5m", "sqlite:// only: how often expired rows are deleted.", kind="duration")
    password: str = opt("", "Redis password (also for Sentinel) when the URL carries none.")
