"""The store interface: a few purpose-built atomic operations on expiring keys.

Every operation is atomic across all processes sharing the backend (a SQLite transaction,
a Redis Lua script) and every key it writes carries a TTL, so state never grows without bound.
Calls are bounded by ``store.timeout``: a store that is down or slow raises :class:`StoreError`
quickly (after a metric and a rate-limited warning); callers turn that into a temperror symbol.
After a failure, calls fail at once for ``store.down_backoff`` (one slow store must not cost
every session a timeout per call); the first call after it tries the store again.

Keys passed in are logical names (``"gl:1.2.3.0/24|a@b|c@d"``); backends add ``store.prefix``.
Multi-key operations wrap the logical name in a Redis hash tag (``{name}``) so that all keys of
one operation land in one Redis Cluster slot.

Operations (``now`` is Unix time in seconds, taken by the caller):
- ``window_hit(name, window, cost)``: sliding-window counter (two fixed buckets weighted by the
  elapsed part of the current one); adds ``cost`` and returns the estimated count in the last
  ``window`` seconds. ``cost = 0`` only reads. ``window_hits([(name, window), ...])`` counts one
  event in several windows at once (a rate limit's IP, /24 and sender domain): one call, one
  atomic section where the backend has one.
- ``incr(name, ttl)``: a counter that lives ``ttl`` seconds from its first increment.
- ``get(name)`` / ``set(name, value, ttl)`` / ``delete(name)``: strings with a TTL.
- ``slot_acquire(name, slot, limit, ttl)``: take one of ``limit`` concurrency slots (expiring
  after ``ttl`` unless refreshed); returns (acquired, slots in use). ``slot_refresh`` and
  ``slot_release`` keep or give it back.
- ``greylist(name, delay, window, lifetime)``: RFC 6647 triplet check-and-record; returns
  (state, seconds): state 'new' (first seen, retry in seconds), 'early' (retry in seconds),
  'pass' (retried in time: accept) or 'known' (passed before: accept).
- ``decay(name, accepted, rejected, half_life, ttl)``: two counters decaying with a half-life;
  adds and returns the current (accepted, rejected). With both zero it only reads.
- ``scan(prefix, limit)``: up to ``limit`` live (name, value) entries whose logical name starts
  with ``prefix`` (operator views and feed export; not for the hot path). Values of structured
  records (counters, histories) are backend-specific; read those with their own operation.
- ``scan_names(prefix, limit)``: the names only (the console's state page).
- ``window_clear(name, window)``: forget a sliding-window counter (the console's release).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from proxy.observability import metrics

T = TypeVar("T")
log = structlog.get_logger("spamgate.store")

GREYLIST_STATES = ("new", "early", "pass", "known")


class StoreError(Exception):
    """The store did not answer in time or failed; the caller emits a temperror symbol."""


class Store:
    """Base class: timeouts, error accounting and logging around the backend's ``_op`` methods."""

    backend = "base"

    def __init__(self, timeout: float, prefix: str = "sg:", down_backoff: float = 0.0) -> None:
        self.timeout = timeout
        self.prefix = prefix
        self.down_backoff = down_backoff
        self._down_until = 0.0
        self._last_warning = 0.0
        self._suppressed = 0

    # -- error handling ---------------------------------------------------------------------

    async def _call(self, op: str, coro: Awaitable[T]) -> T:
        if self._down_until and time.monotonic() < self._down_until:
            # Failed a moment ago: answer at once rather than make every session wait the timeout.
            if asyncio.iscoroutine(coro):
                coro.close()
            metrics.store_error(self.backend, op)
            raise StoreError(f"{self.backend} {op}: store down, retrying in a moment")
        try:
            # asyncio.timeout, not wait_for: no extra task per call (the cancellation it uses
            # on expiry stays inside this call and becomes TimeoutError here).
            async with asyncio.timeout(self.timeout):
                out = await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(op, exc)
            if self.down_backoff > 0:
                self._down_until = time.monotonic() + self.down_backoff
            raise StoreError(f"{self.backend} {op}: {type(exc).__name__}: {exc}") from exc
        self._down_until = 0.0
        return out

    def _failed(self, op: str, exc: BaseException) -> None:
        metrics.store_error(self.backend, op)
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            log.warning(
                "store_error",
                backend=self.backend,
                operation=op,
                error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                suppressed=self._suppressed,
            )
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    # -- the operations -----------------------------------------------------------------------

    async def window_hit(self, name: str, window: float, cost: int = 1) -> float:
        return await self._call("window_hit", self._window_hit(name, window, cost, time.time()))

    async def window_hits(self, windows: list[tuple[str, float]]) -> list[float]:
        return await self._call("window_hit", self._window_hits(windows, time.time()))

    async def incr(self, name: str, ttl: float) -> int:
        return await self._call("incr", self._incr(name, ttl))

    async def get(self, name: str) -> str | None:
        return await self._call("get", self._get(name))

    async def set(self, name: str, value: str, ttl: float) -> None:
        await self._call("set", self._set(name, value, ttl))

    async def delete(self, name: str) -> None:
        await self._call("delete", self._delete(name))

    async def slot_acquire(self, name: str, slot: str, limit: int, ttl: float) -> tuple[bool, int]:
        return await self._call("slot_acquire", self._slot_acquire(name, slot, limit, ttl, time.time()))

    async def slot_refresh(self, name: str, slot: str, ttl: float) -> None:
        await self._call("slot_refresh", self._slot_refresh(name, slot, ttl, time.time()))

    async def slot_release(self, name: str, slot: str) -> None:
        await self._call("slot_release", self._slot_release(name, slot))

    async def greylist(self, name: str, delay: float, window: float, lifetime: float) -> tuple[str, float]:
        return await self._call("greylist", self._greylist(name, delay, window, lifetime, time.time()))

    async def decay(
        self, name: str, accepted: float, rejected: float, half_life: float, ttl: float
    ) -> tuple[float, float]:
        return await self._call("decay", self._decay(name, accepted, rejected, half_life, ttl, time.time()))

    async def scan(self, prefix: str, limit: int = 100000) -> list[tuple[str, str]]:
        return await self._call("scan", self._scan(prefix, limit, time.time()))

    async def scan_names(self, prefix: str, limit: int = 200) -> list[str]:
        return [name for name, _ in await self.scan(prefix, limit)]

    async def window_clear(self, name: str, window: float) -> None:
        await self._call("window_clear", self._window_clear(name, window, time.time()))

    async def ping(self) -> bool:
        try:
            await self._call("ping", self._ping())
        except StoreError:
            return False
        return True

    async def close(self) -> None:
        """Release connections and threads. The store must not be used afterwards."""

    # -- backend hooks ----------------------------------------------------------------------------

    async def _window_hit(self, name: str, window: float, cost: int, now: float) -> float:
        raise NotImplementedError

    async def _window_hits(self, windows: list[tuple[str, float]], now: float) -> list[float]:
        """Default: the windows one by one, concurrently (a backend with transactions does better)."""
        return list(await asyncio.gather(*(self._window_hit(n, w, 1, now) for n, w in windows)))

    async def _incr(self, name: str, ttl: float) -> int:
        raise NotImplementedError

    async def _get(self, name: str) -> str | None:
        raise NotImplementedError

    async def _set(self, name: str, value: str, ttl: float) -> None:
        raise NotImplementedError

    async def _delete(self, name: str) -> None:
        raise NotImplementedError

    async def _slot_acquire(
        self, name: str, slot: str, limit: int, ttl: float, now: float
    ) -> tuple[bool, int]:
        raise NotImplementedError

    async def _slot_refresh(self, name: str, slot: str, ttl: float, now: float) -> None:
        raise NotImplementedError

    async def _slot_release(self, name: str, slot: str) -> None:
        raise NotImplementedError

    async def _greylist(
        self, name: str, delay: float, window: float, lifetime: float, now: float
    ) -> tuple[str, float]:
        raise NotImplementedError

    async def _decay(  # noqa: PLR0917
        self, name: str, accepted: float, rejected: float, half_life: float, ttl: float, now: float
    ) -> tuple[float, float]:
        raise NotImplementedError

    async def _scan(self, prefix: str, limit: int, now: float) -> list[tuple[str, str]]:
        raise NotImplementedError

    async def _ping(self) -> None:
        raise NotImplementedError

    async def _window_clear(self, name: str, window: float, now: float) -> None:
        raise NotImplementedError


def window_buckets(window: float, now: float) -> tuple[int, float]:
    """(index of the current bucket, weight of the previous bucket) of a sliding window."""
    bucket = int(now // window)
    elapsed = (now - bucket * window) / window
    return bucket, 1.0 - elapsed


def key_names(*args: Any) -> str:
    """A logical key name from parts; '|' separates them (addresses are lower-cased by callers)."""
    return "|".join(str(a) for a in args)
