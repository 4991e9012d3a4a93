"""What the external scanner checks share (clamav, rspamd, spamassassin).

- The options every scanner has: ``address``, ``timeout``, ``max_connections``, ``max_size``,
  ``on_error`` and ``ready_check`` (:func:`scanner_options` gives each its defaults).
- ``on_error``: a scan without a verdict (scanner down, slow, busy, or answering an error)
  always yields the check's ``*_TEMPERROR`` symbol (weight 0); with "tempfail" the check also
  emits ``SCANNER_TEMPFAIL``, whose forced action is tempfail (451 4.7.1): the sender retries
  later. The antivirus defaults to "tempfail" (fail closed), the spam scanners to "continue".
- A message larger than ``max_size`` is not sent; the check emits its ``*_SKIPPED{size}``.
- Readiness: with ``ready_check = "auto"`` a scanner whose failure defers mail (on_error =
  "tempfail") is a dependency of ``/readyz``; "yes"/"no" force it in or out. Every scanner's
  health is in ``/metrics`` (``spamgate_scanner_up``) either way.
"""

from __future__ import annotations

from typing import Any

from proxy.checks.base import Services
from proxy.config.fields import ConfigError, opt
from proxy.model import Symbol, SymbolDef
from proxy.observability import scanner_metrics
from proxy.scan.base import ScanError, Scanner

SCANNER_TEMPFAIL = SymbolDef(
    "SCANNER_TEMPFAIL",
    "A content scanner gave no verdict and its on_error is 'tempfail': the message is deferred "
    "(evidence: the scanner's temperror symbol).",
    score=0.0,
    action="tempfail",
    reply="451 4.7.1 Message could not be scanned, try again later",
    remedy="Nothing to fix on the sender's side: the receiving site's scanner failed; retry later.",
)

ON_ERROR = ("continue", "tempfail")


def scanner_options(
    address: str, timeout: str, max_connections: int, max_size: str, on_error: str
) -> dict[str, Any]:
    """The fields every scanner's Options has, with that scanner's defaults."""
    return {
        "address": opt(address, "The scanner: 'host:port', '[v6]:port', or a Unix socket 'unix:/path'."),
        "timeout": opt(
            timeout,
            "Deadline of one scan (waiting for a free connection included); keep it below "
            "policy.stage_timeout so a slow scanner yields its own temperror.",
            kind="duration",
        ),
        "max_connections": opt(
            max_connections,
            "Connections to the scanner at once, per worker process; more messages wait for one.",
            minimum=1,
        ),
        "max_size": opt(
            max_size,
            "Messages larger than this are not sent to the scanner (the *_SKIPPED symbol says so).",
            kind="size",
        ),
        "on_error": opt(
            on_error,
            "When the scan gives no verdict (down, timeout, busy, error): 'continue' (the weight-0 "
            "*_TEMPERROR symbol only) or 'tempfail' (also SCANNER_TEMPFAIL: 451 4.7.1).",
            choices=ON_ERROR,
        ),
        "ready_check": opt(
            "auto",
            "Is the scanner a dependency of /readyz: 'auto' (when on_error is 'tempfail'), 'yes', 'no'.",
            choices=("auto", "yes", "no"),
        ),
    }


def check_timeout(name: str, timeout: float, services: Services) -> None:
    budget = services.config.policy.stage_timeout
    if timeout >= budget:
        raise ConfigError(
            f"checks.{name}.timeout",
            f"must be shorter than policy.stage_timeout ({budget:g}s), got {timeout:g}s",
        )


def register_readiness(scanner: Scanner, options: Any, services: Services) -> None:
    wanted = options.ready_check == "yes" or (
        options.ready_check == "auto" and options.on_error == "tempfail"
    )
    if wanted:
        services.readiness[scanner.name] = scanner.probe


def failure(symbol: SymbolDef, error: ScanError, on_error: str) -> list[Symbol]:
    hits = [symbol.hit(f"{error.kind}: {error.detail}"[:300])]
    if on_error == "tempfail":
        hits.append(SCANNER_TEMPFAIL.hit(symbol.name))
    return hits


def skipped(scanner: str, symbol: SymbolDef, size: int, limit: int | str) -> list[Symbol]:
    scanner_metrics.verdict(scanner, "skipped")
    return [symbol.hit(f"{size}>{limit}")]
