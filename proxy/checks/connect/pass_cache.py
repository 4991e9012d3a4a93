"""The temporary allowlist of clients that passed a connection test (postscreen's "PASS OLD").

A client that passed a connect-stage test (``dnsbl``, ``rdns``, ``pregreet``) is remembered per
test for that check's ``pass_ttl`` and skips the test on its next connections. The cache is
``services.pass_cache`` when the state subsystem provides one (shared by the fleet through the
store); otherwise one bounded in-memory :class:`MemoryPassCache` per process.

Interface (both implementations): ``async passed(ip, test) -> bool`` and
``async remember(ip, test, ttl) -> None``. A failing cache never fails the check: errors read
as "not passed", are logged, and each call is bounded by ``TIMEOUT`` seconds (the pregreet
hook runs before the stage budget applies).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Protocol

import structlog

log = structlog.get_logger("spamgate.pass_cache")
TIMEOUT = 1.0


class PassCache(Protocol):
    async def passed(self, ip: str, test: str) -> bool: ...
    async def remember(self, ip: str, test: str, ttl: float) -> None: ...


class MemoryPassCache:
    """A bounded LRU of (ip, test) -> expiry time; the oldest entries go first when full."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._items: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    async def passed(self, ip: str, test: str) -> bool:
        key = (ip, test)
        until = self._items.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._items[key]
            return False
        return True

    async def remember(self, ip: str, test: str, ttl: float) -> None:
        if ttl <= 0:
            return
        key = (ip, test)
        self._items[key] = time.monotonic() + ttl
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_memory = MemoryPassCache()


def cache_for(services: Any) -> PassCache:
    """``services.pass_cache`` when set, else the process's in-memory cache."""
    cache = getattr(services, "pass_cache", None)
    return cache if cache is not None else _memory


async def passed(services: Any, ip: str, test: str, ttl: float) -> bool:
    if ttl <= 0:
        return False
    try:
        async with asyncio.timeout(TIMEOUT):
            return await cache_for(services).passed(ip, test)
    except Exception as exc:
        log.warning("pass_cache_error", op="passed", test=test, error=repr(exc))
        return False


async def remember(services: Any, ip: str, test: str, ttl: float) -> None:
    if ttl <= 0:
        return
    try:
        async with asyncio.timeout(TIMEOUT):
            await cache_for(services).remember(ip, test, ttl)
    except Exception as exc:
        log.warning("pass_cache_error", op="remember", test=test, error=repr(exc))
