"""``[metrics]``: the admin listener (Prometheus /metrics, /healthz, /readyz)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = opt(
        "127.0.0.1:9325",
        "Admin listener 'host:port' serving /metrics, /healthz and /readyz; empty: off.",
    )
