"""Recipient validation cache (Postfix's verify cache) and dictionary-attack detection at RCPT.

When the downstream answers a RCPT with ``550 5.1.1`` (unknown user), the address is
remembered in the store for ``ttl`` (``rcptbad|<address>``, through
``Services.on_rcpt_reply``). A later RCPT to it, from any client on any instance sharing the
store, gets ``RCPT_UNKNOWN_CACHED`` and the same ``550 5.1.1`` answered locally, without a
downstream round trip. The first positive downstream answer is never cached: only refusals.

Every unknown recipient (downstream or cached) counts against the client IP in a sliding
window of ``dictionary_window``; from ``dictionary_threshold`` on, the client gets
``RCPT_DICTIONARY`` (evidence: the count) on each further RCPT and goes into the fleet-wide
penalty box for ``penalty_time``. In observe mode the symbols are logged and the cache is kept
(it only repeats the downstream's own answer), but nobody is boxed.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import structlog

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.options import OffByDefault
from proxy.checks.storeutil import ON_STORE_ERROR_DOC, store_failed
from proxy.config.fields import opt
from proxy.model import Connection, Reply
from proxy.observability import metrics
from proxy.state.base import Store, StoreError
from proxy.state.penalty import PenaltyBox
from proxy.state.util import Background

log = structlog.get_logger("spamgate.sharing")
CACHE_PREFIX = "rcptbad|"

RCPT_UNKNOWN_CACHED = SymbolDef(
    "RCPT_UNKNOWN_CACHED",
    "The downstream refused this recipient (evidence) as unknown recently; answered from the cache.",
    score=0.0,
    action="reject",
    reply="550 5.1.1 <{evidence}>: Recipient address rejected: User unknown",
    remedy="Check the recipient address; remove it from your lists if it is gone.",
)
RCPT_DICTIONARY = SymbolDef(
    "RCPT_DICTIONARY",
    "The client tried many unknown recipients recently (evidence: count in the window): a "
    "dictionary attack; it went into the fleet-wide penalty box.",
    score=0.0,
    action="tempfail",
    reply="451 4.7.1 Too many unknown recipients from your address, try again later",
    remedy="Clean your recipient lists; stop guessing addresses. The penalty expires by itself.",
)


@dataclass(frozen=True, slots=True)
class RecipientCacheOptions(OffByDefault):
    ttl: float = opt("3h", "How long a downstream '550 5.1.1' for an address is remembered.", kind="duration")
    dictionary_threshold: int = opt(
        20, "Unknown recipients within dictionary_window that make a dictionary attack; 0 = off.", minimum=0
    )
    dictionary_window: float = opt("10m", "Window of the unknown-recipient count.", kind="duration")
    penalty_time: float = opt(
        "1h", "How long a dictionary attacker stays in the fleet-wide penalty box.", kind="duration"
    )
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients never counted or penalised (besides relay.relay_networks); default: this host.",
        kind="cidrs",
    )
    on_store_error: str = opt("continue", ON_STORE_ERROR_DOC, choices=("continue", "tempfail"))


class RecipientCache(Check):
    name = "recipient_cache"
    stage = Stage.RCPT
    symbols = (RCPT_UNKNOWN_CACHED, RCPT_DICTIONARY)
    Options = RecipientCacheOptions
    description = "Caches downstream 'unknown user' refusals; detects and penalises dictionary attacks."
    io = True

    def __init__(self, options: RecipientCacheOptions, services: Services) -> None:
        super().__init__(options, services)
        self.bg = Background()

    async def start(self) -> None:
        self.store: Store = self.services.store
        self.box = PenaltyBox(self.store)
        self.exempt = [
            ipaddress.ip_network(n, strict=False)
            for n in [*self.services.config.relay.relay_networks, *self.options.exempt_networks]
        ]
        self.services.on_rcpt_reply.append(self._on_reply)

    async def stop(self) -> None:
        await self.bg.drain()

    def _exempt(self, conn: Connection) -> bool:
        return any(conn.ip in n for n in self.exempt)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        o: RecipientCacheOptions = self.options
        dry = bool(ctx.conn.notes.get("dry_run"))  # spamgate explain: read, never count
        counted = o.dictionary_threshold > 0 and not self._exempt(ctx.conn)
        try:
            cached = await self.store.get(CACHE_PREFIX + ctx.rcpt.lower())
            out: list[Symbol] = []
            if cached is not None:
                metrics.sharing_event("rcpt_cache_hit")
                out.append(RCPT_UNKNOWN_CACHED.hit(ctx.rcpt))
            if counted:
                cost = 1 if cached is not None and not dry else 0
                n = await self.store.window_hit(f"dict|{ctx.conn.ip_str}", o.dictionary_window, cost)
                if n >= o.dictionary_threshold:
                    out.append(RCPT_DICTIONARY.hit(str(math.floor(n))))
                    if not dry:
                        await self._penalise(ctx.conn, n)
        except StoreError:
            return store_failed(self.name, o.on_store_error)
        return out

    def _on_reply(self, conn: Connection, txn: Any, address: str, reply: Reply) -> None:
        if reply.code == 550 and reply.enhanced == "5.1.1":
            self.bg.spawn(self._remember(conn, address))

    async def _remember(self, conn: Connection, address: str) -> None:
        o: RecipientCacheOptions = self.options
        counted = o.dictionary_threshold > 0 and not self._exempt(conn)
        value = json.dumps({"reply": "550 5.1.1", "until": round(time.time() + o.ttl, 3)})
        await self.store.set(CACHE_PREFIX + address.lower(), value, o.ttl)
        metrics.sharing_event("rcpt_cached")
        if counted:
            n = await self.store.window_hit(f"dict|{conn.ip_str}", o.dictionary_window)
            if n >= o.dictionary_threshold:
                await self._penalise(conn, n)

    async def _penalise(self, conn: Connection, count: float) -> None:
        if self.options.mode == "observe":
            return
        reason = f"RCPT_DICTIONARY{{{math.floor(count)}}}"
        entry = await self.box.add(conn.ip_str, reason, self.options.penalty_time)
        metrics.sharing_event("dictionary_attack")
        log.info("penalty_added", ip=entry.ip, reason=entry.reason, until=int(entry.until))
