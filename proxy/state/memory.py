"""``memory://``: state in this process only (tests, a single worker). Bounded and expiring.

Operations run synchronously on the event loop thread (atomic by construction). Beyond
``store.memory_max_keys`` the expired keys are swept, then the oldest written keys dropped (down to 90%).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from proxy.state import kvops
from proxy.state.base import Store


class _MemKV:
    def __init__(self, max_keys: int) -> None:
        self.data: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.max_keys = max_keys

    def get(self, key: str, now: float) -> Any:
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self.data[key]
            return None
        return item[0]

    def get_many(self, keys: list[str], now: float) -> list[Any]:
        return [self.get(k, now) for k in keys]

    def put(self, key: str, value: Any, expires: float) -> None:
        self.data[key] = (value, expires)
        self.data.move_to_end(key)
        if len(self.data) > self.max_keys:
            self._shrink()

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def _shrink(self) -> None:
        now = time.time()
        for k in [k for k, (_, exp) in self.data.items() if exp <= now]:
            del self.data[k]
        # Down to 90%: the next full sweep comes only after max_keys/10 more writes (amortised O(1)).
        while len(self.data) > self.max_keys * 0.9:
            self.data.popitem(last=False)


class MemoryStore(Store):
    backend = "memory"

    def __init__(self, timeout: float, prefix: str = "sg:", max_keys: int = 200000) -> None:
        super().__init__(timeout, prefix)
        self.kv = _MemKV(max_keys)

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _window_clear(self, name: str, window: float, now: float) -> None:
        kvops.window_clear(self.kv, self._k(name), window, now)

    async def _window_hit(self, name: str, window: float, cost: int, now: float) -> float:
        return kvops.window_hit(self.kv, self._k(name), window, cost, now)

    async def _window_hits(self, windows: list[tuple[str, float]], now: float) -> list[float]:
        return [kvops.window_hit(self.kv, self._k(n), w, 1, now) for n, w in windows]

    async def _incr(self, name: str, ttl: float) -> int:
        return kvops.incr(self.kv, self._k(name), ttl, time.time())

    async def _get(self, name: str) -> str | None:
        v = self.kv.get(self._k(name), time.time())
        return None if v is None else str(v)

    async def _set(self, name: str, value: str, ttl: float) -> None:
        self.kv.put(self._k(name), value, time.time() + ttl)

    async def _delete(self, name: str) -> None:
        self.kv.delete(self._k(name))

    async def _slot_acquire(
        self, name: str, slot: str, limit: int, ttl: float, now: float
    ) -> tuple[bool, int]:
        return kvops.slot_acquire(self.kv, self._k(name), slot, limit, ttl, now)

    async def _slot_refresh(self, name: str, slot: str, ttl: float, now: float) -> None:
        kvops.slot_refresh(self.kv, self._k(name), slot, ttl, now)

    async def _slot_release(self, name: str, slot: str) -> None:
        kvops.slot_release(self.kv, self._k(name), slot, time.time())

    async def _greylist(
        self, name: str, delay: float, window: float, lifetime: float, now: float
    ) -> tuple[str, float]:
        return kvops.greylist(self.kv, self._k(name), delay, window, lifetime, now)

    async def _decay(  # noqa: PLR0917
        self, name: str, accepted: float, rejected: float, half_life: float, ttl: float, now: float
    ) -> tuple[float, float]:
        return kvops.decay(self.kv, self._k(name), accepted, rejected, half_life, ttl, now)

    async def _scan(self, prefix: str, limit: int, now: float) -> list[tuple[str, str]]:
        full, n = self._k(prefix), len(self.prefix)
        out = [(k[n:], str(v)) for k, (v, exp) in self.kv.data.items() if k.startswith(full) and exp > now]
        return out[:limit]

    async def _ping(self) -> None:
        return None
