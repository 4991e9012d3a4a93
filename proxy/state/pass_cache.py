"""The temporary allowlist of clients that passed the connection tests, kept in the store.

The connect checks (DNS lists, rDNS, pregreet) ask ``passed(ip, test)`` before doing the work
and call ``remember(ip, test, ttl)`` after a clean result, so a fleet shares what one instance
learned. A store failure reads as "not passed" (the test simply runs) and never raises.
"""

from __future__ import annotations

from proxy.state.base import Store, StoreError


class StorePassCache:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _name(ip: str, test: str) -> str:
        return f"pass|{test}|{ip}"

    async def passed(self, ip: str, test: str) -> bool:
        try:
            return await self.store.get(self._name(str(ip), test)) is not None
        except StoreError:
            return False

    async def remember(self, ip: str, test: str, ttl: float) -> None:
        try:
            await self.store.set(self._name(str(ip), test), "1", ttl)
        except StoreError:
            return
