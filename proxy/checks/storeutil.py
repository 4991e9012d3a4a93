"""What the state-based checks share: the store-failure symbols.

``STORE_TEMPERROR`` (weight 0) fires whenever a check could not reach the store; with the
check's ``on_store_error = "tempfail"`` ``STORE_TEMPFAIL`` fires as well and defers the client
(421 4.7.0 at connect, 451 4.7.1 later). ``continue`` (the default) goes on as if the check
had found nothing. Both are declared once, by the ``ratelimit`` check (see registry).
"""

from __future__ import annotations

from proxy.model import Symbol, SymbolDef

STORE_TEMPERROR = SymbolDef(
    "STORE_TEMPERROR",
    "A check could not reach the shared state store in time (evidence: the check); it went on without it.",
    score=0.0,
    remedy="Nothing for the sender; the postmaster should check the store (Redis/SQLite) and its latency.",
)
STORE_TEMPFAIL = SymbolDef(
    "STORE_TEMPFAIL",
    "The store was unreachable and the check is configured with on_store_error = 'tempfail'.",
    score=0.0,
    action="tempfail",
    remedy="Retry later; the receiving site's state store is temporarily unavailable.",
)
STORE_SYMBOLS = (STORE_TEMPERROR, STORE_TEMPFAIL)

ON_STORE_ERROR_DOC = (
    "When the store fails or times out: 'continue' (as if nothing was found) or 'tempfail' (4xx)."
)


def store_failed(check: str, on_error: str) -> list[Symbol]:
    out = [STORE_TEMPERROR.hit(check)]
    if on_error == "tempfail":
        out.append(STORE_TEMPFAIL.hit(check))
    return out
