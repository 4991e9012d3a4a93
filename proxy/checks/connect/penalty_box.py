"""The fleet-wide penalty box at connect (:mod:`proxy.state.penalty`).

A client IP put in the box by a spamtrap hit (``TRAP_HIT``) or a dictionary attack
(``RCPT_DICTIONARY``), on any instance sharing the store, gets ``PENALTY_BOX`` (421 4.7.0 by
default) at every connection until the entry expires. The evidence names the reason and the
expiry for the log and ``spamgate explain``; the reply says neither (a trap stays secret).
Clients in ``relay.relay_networks`` and ``exempt_networks`` are never refused.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.checks.storeutil import ON_STORE_ERROR_DOC, store_failed
from proxy.config.fields import opt
from proxy.observability import metrics
from proxy.state.base import StoreError
from proxy.state.penalty import PenaltyBox

PENALTY_BOX = SymbolDef(
    "PENALTY_BOX",
    "The client IP is in the fleet-wide penalty box (evidence: reason and expiry, UTC).",
    score=0.0,
    action="tempfail",
    reply="421 4.7.0 Too much unwanted traffic from your address, try again later",
    remedy="Stop sending to unknown or trap addresses; the penalty expires by itself.",
)


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True, slots=True)
class PenaltyBoxOptions(BaseOptions):
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients never refused by the box (besides relay.relay_networks); default: this host.",
        kind="cidrs",
    )
    on_store_error: str = opt("continue", ON_STORE_ERROR_DOC, choices=("continue", "tempfail"))


class PenaltyBoxCheck(Check):
    name = "penalty_box"
    stage = Stage.CONNECT
    symbols = (PENALTY_BOX,)
    Options = PenaltyBoxOptions
    description = "Refuses clients in the fleet-wide penalty box (spamtrap hits, dictionary attacks)."
    io = True

    async def start(self) -> None:
        self.box = PenaltyBox(self.services.store)
        self.exempt = [
            ipaddress.ip_network(n, strict=False)
            for n in [*self.services.config.relay.relay_networks, *self.options.exempt_networks]
        ]

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if any(ctx.conn.ip in n for n in self.exempt):
            return []
        try:
            entry = await self.box.get(ctx.conn.ip_str)
        except StoreError:
            return store_failed(self.name, self.options.on_store_error)
        if entry is None:
            return []
        metrics.sharing_event("penalty_refused")
        return [PENALTY_BOX.hit(f"{entry.reason};until={utc(entry.until)}")]
