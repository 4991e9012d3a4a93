"""``[store]``: where shared state lives (greylisting, rate limits, reputation, pass cache)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = opt(
        "sqlite:///var/state.db",
        "State backend: 'memory://', 'sqlite:///path' (one host), 'redis://', 'rediss://', "
        "'redis+sentinel://', 'redis+cluster://'.",
    )
    timeout: float = opt(
        "500ms", "Timeout of one store call; past it the check emits a temperror symbol.", kind="duration"
    )
