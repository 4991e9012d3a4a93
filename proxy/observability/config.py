"""``[metrics]``: the admin listener (Prometheus /metrics, /healthz, /readyz).

The listener and the metrics are set up at start; changing ``listen`` needs a restart (SIGHUP
keeps the running listener). ``readyz_*`` keys take effect on reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = opt(
        "127.0.0.1:9325",
        "Admin listener 'host:port' serving /metrics, /healthz and /readyz; empty: off.",
    )
    readyz_timeout: float = opt(
        "2s",
        "/readyz: how long each dependency (downstream connect + 220, store...) may take to answer.",
        kind="duration",
        minimum=0.01,
    )
    readyz_cache: float = opt(
        "3s",
        "/readyz: how long a downstream probe result is reused before connecting again.",
        kind="duration",
        minimum=0,
    )
