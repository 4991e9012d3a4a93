"""Metrics of the external content scanners (clamd, rspamd, spamd): self-contained, created
on first use in the registry of :mod:`proxy.observability.metrics` (no-ops until it is
enabled). With several workers the values go to the multiprocess files like every other series.

- ``spamgate_scanner_seconds{scanner}``: time of each exchange (waiting for a connection slot
  included), answered or failed;
- ``spamgate_scanner_errors{scanner,kind}``: exchanges without a verdict, by error kind
  (unavailable, timeout, busy, protocol, refused, too_big);
- ``spamgate_scanner_verdicts{scanner,verdict}``: verdicts (clean/virus, ham/spam, rspamd's
  action), and ``skipped`` for messages over the size cap;
- ``spamgate_scanner_up{scanner}``: 1 when the last exchange or probe succeeded, 0 when not.
"""

from __future__ import annotations

from typing import Any

from proxy.observability import metrics

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _ScanMetrics:
    def __init__(self, registry: Any, multi: bool) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.seconds = Histogram(
            "spamgate_scanner_seconds",
            "Time of one exchange with an external scanner (slot wait included), by scanner.",
            ["scanner"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "spamgate_scanner_errors",
            "Scanner exchanges that gave no verdict, by scanner and kind.",
            ["scanner", "kind"],
            registry=registry,
        )
        self.verdicts = Counter(
            "spamgate_scanner_verdicts",
            "Scanner verdicts (clean, virus, ham, spam, rspamd's action, skipped), by scanner.",
            ["scanner", "verdict"],
            registry=registry,
        )
        self.up = Gauge(
            "spamgate_scanner_up",
            "1 when the scanner's last exchange or probe succeeded, 0 when it failed.",
            ["scanner"],
            registry=registry,
            multiprocess_mode="mostrecent" if multi else "all",
        )


_s: _ScanMetrics | None = None


def _get() -> _ScanMetrics | None:
    global _s
    if _s is None:
        m = metrics._m  # the process's collectors; None while metrics are off
        if m is None:
            return None
        _s = _ScanMetrics(m.registry, m.multi)
    return _s


def scan(scanner: str, seconds: float, error: str = "") -> None:
    s = _get()
    if s is None:
        return
    s.seconds.labels(scanner).observe(seconds)
    if error:
        s.errors.labels(scanner, error).inc()


def verdict(scanner: str, verdict: str) -> None:
    s = _get()
    if s is not None:
        s.verdicts.labels(scanner, verdict).inc()


def health(scanner: str, up: bool) -> None:
    s = _get()
    if s is not None:
        s.up.labels(scanner).set(1 if up else 0)
