"""The store operations written once over a tiny key-value transaction (memory and SQLite).

A :class:`KV` is a view on the backend inside one atomic section (the memory store's single
thread, one SQLite ``BEGIN IMMEDIATE`` transaction): ``get`` returns a JSON-able value or None
when absent or expired, ``get_many`` reads several keys at once, ``put`` stores a value with an
absolute expiry time. A value returned by ``get`` may be shared with later reads in the same
section: an operation that changes it must ``put`` it. The Redis backend implements the same
semantics as Lua scripts (:mod:`proxy.state.redis_store`).
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy.state.base import window_buckets


class KV(Protocol):
    def get(self, key: str, now: float) -> Any: ...

    def get_many(self, keys: list[str], now: float) -> list[Any]: ...

    def put(self, key: str, value: Any, expires: float) -> None: ...

    def delete(self, key: str) -> None: ...


def window_hit(kv: KV, key: str, window: float, cost: int, now: float) -> float:
    bucket, weight = window_buckets(window, now)
    cur_key, prev_key = f"{key}:{bucket}", f"{key}:{bucket - 1}"
    cur_v, prev_v = kv.get_many([cur_key, prev_key], now)
    cur, prev = int(cur_v or 0), int(prev_v or 0)
    if cost:
        cur += cost
        kv.put(cur_key, cur, (bucket + 2) * window)
    return cur + prev * weight


def window_clear(kv: KV, key: str, window: float, now: float) -> None:
    bucket, _ = window_buckets(window, now)
    kv.delete(f"{key}:{bucket}")
    kv.delete(f"{key}:{bucket - 1}")


def incr(kv: KV, key: str, ttl: float, now: float) -> int:
    rec = kv.get(key, now)
    if rec is None:
        rec = [0, now + ttl]
    rec[0] += 1
    kv.put(key, rec, rec[1])
    return int(rec[0])


def slot_acquire(  # noqa: PLR0917
    kv: KV, key: str, slot: str, limit: int, ttl: float, now: float
) -> tuple[bool, int]:
    slots: dict[str, float] = {k: v for k, v in (kv.get(key, now) or {}).items() if v > now}
    if slot not in slots and len(slots) >= limit:
        kv.put(key, slots, max(slots.values()))
        return False, len(slots)
    slots[slot] = now + ttl
    kv.put(key, slots, max(slots.values()))
    return True, len(slots)


def slot_refresh(kv: KV, key: str, slot: str, ttl: float, now: float) -> None:
    slots: dict[str, float] = {k: v for k, v in (kv.get(key, now) or {}).items() if v > now}
    slots[slot] = now + ttl
    kv.put(key, slots, max(slots.values()))


def slot_release(kv: KV, key: str, slot: str, now: float) -> None:
    slots: dict[str, float] = {k: v for k, v in (kv.get(key, now) or {}).items() if v > now}
    slots.pop(slot, None)
    if slots:
        kv.put(key, slots, max(slots.values()))
    else:
        kv.delete(key)


def greylist(  # noqa: PLR0917
    kv: KV, key: str, delay: float, window: float, lifetime: float, now: float
) -> tuple[str, float]:
    rec = kv.get(key, now)
    if rec is not None:
        first, passed = float(rec[0]), bool(rec[1])
        if passed:
            kv.put(key, [first, 1], now + lifetime)
            return "known", 0.0
        elapsed = now - first
        if elapsed < delay:
            return "early", delay - elapsed
        if elapsed <= delay + window:
            kv.put(key, [first, 1], now + lifetime)
            return "pass", 0.0
    kv.put(key, [now, 0], now + delay + window)
    return "new", delay


def decay(  # noqa: PLR0917
    kv: KV, key: str, accepted: float, rejected: float, half_life: float, ttl: float, now: float
) -> tuple[float, float]:
    rec = kv.get(key, now)
    a = r = 0.0
    if rec is not None:
        factor = 0.5 ** (max(0.0, now - float(rec[2])) / half_life)
        a, r = float(rec[0]) * factor, float(rec[1]) * factor
    if accepted or rejected:
        a, r = a + accepted, r + rejected
        kv.put(key, [a, r, now], now + ttl)
    return a, r
