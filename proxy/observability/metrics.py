"""The metrics hooks the rest of the code calls. Cheap no-ops until :func:`enable` installs
Prometheus collectors (see ``[metrics]``); callers never import prometheus_client themselves.
"""

from __future__ import annotations


def dns_query(qtype: str, outcome: str, seconds: float) -> None:
    """One DNS query: outcome is 'ok', 'nxdomain', 'timeout', 'error' or 'cache_hit'."""


def list_health(zone: str, healthy: bool) -> None:
    """A DNS list's health after a probe (False: disabled, not trusted)."""


def store_error(backend: str, operation: str) -> None:
    """A store call that failed or timed out."""
