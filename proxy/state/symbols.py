"""What the state-based checks share: store-failure symbols, netblocks, fire-and-forget tasks.

``STORE_TEMPERROR`` (weight 0) fires whenever a check could not reach the store; with the
check's ``on_store_error = "tempfail"`` ``STORE_TEMPFAIL`` fires as well and defers the client
(421 4.7.0 at connect, 451 4.7.1 later). ``continue`` (the default) goes on as if the check
had found nothing. Both are declared once, by the ``ratelimit`` check (see registry).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine
from typing import Any

from proxy.checks.base import Symbol, SymbolDef

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


def netblock(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int) -> str:
    """The client's network: ``192.0.2.0/24`` for an IPv4 address with ``v4 = 24``."""
    prefix = v4 if ip.version == 4 else v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class Background:
    """Keeps references to fire-and-forget tasks (store updates from sync callbacks)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: StoreError is already logged by the store

    async def drain(self, wait: float = 2.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=wait)
