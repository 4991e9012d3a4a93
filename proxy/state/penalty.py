"""The fleet-wide penalty box: client IPs refused at connect, each with a reason and an expiry.

One store key per IP, ``pbox|<ip>``, holding ``{"reason": ..., "since": ..., "until": ...}``
(Unix times) with the store TTL set to the expiry, so every instance sharing the store refuses
the IP at its next connection and the entry disappears by itself. A new penalty never shortens
an existing one: the later expiry wins, the newer reason is kept.

Written by the spamtrap and dictionary-attack detection, read by the ``penalty_box`` connect
check, listed and cleared by ``spamgate state``, exported by the feed (:mod:`proxy.sharing`).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass

from proxy.state.base import Store

PREFIX = "pbox|"


@dataclass(frozen=True, slots=True)
class Penalty:
    ip: str
    reason: str  # a symbol with its evidence: "TRAP_HIT{trap@example.org}"
    since: float
    until: float

    def to_json(self) -> str:
        d = {"reason": self.reason, "since": round(self.since, 3), "until": round(self.until, 3)}
        return json.dumps(d)

    @classmethod
    def parse(cls, ip: str, value: str) -> Penalty:
        try:
            d = json.loads(value)
            return cls(ip, str(d.get("reason", "")), float(d.get("since", 0)), float(d.get("until", 0)))
        except (ValueError, TypeError, AttributeError):
            return cls(ip, value, 0.0, 0.0)  # a foreign or old value: still a penalty


class PenaltyBox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, ip: str, reason: str, ttl: float) -> Penalty:
        ip = str(ipaddress.ip_address(ip))
        now = time.time()
        old = await self.get(ip)
        until = max(now + ttl, old.until if old is not None else 0.0)
        entry = Penalty(ip, reason, now, until)
        await self.store.set(PREFIX + ip, entry.to_json(), max(1.0, until - now))
        return entry

    async def get(self, ip: str) -> Penalty | None:
        value = await self.store.get(PREFIX + ip)
        return None if value is None else Penalty.parse(ip, value)

    async def list(self, limit: int = 100000) -> list[Penalty]:
        rows = await self.store.scan(PREFIX, limit)
        out = [Penalty.parse(name[len(PREFIX) :], value) for name, value in rows]
        return sorted(out, key=lambda p: p.ip)

    async def clear(self, ip: str) -> bool:
        ip = str(ipaddress.ip_address(ip))
        present = await self.get(ip) is not None
        await self.store.delete(PREFIX + ip)
        return present
