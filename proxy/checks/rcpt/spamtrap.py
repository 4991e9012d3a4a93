"""Spamtraps (OpenBSD spamd greytrapping, rspamd's spamtrap module) at RCPT.

A recipient in ``addresses``, or any recipient at a domain of ``domains`` (an entry
``.example.org`` also matches its subdomains), is a trap: nobody legitimate mails it. The RCPT
gets ``TRAP_HIT`` (evidence: the address), refused ``550 5.1.1`` like an unknown user so the
sender never learns it hit a trap, and the client IP goes into the fleet-wide penalty box
(:mod:`proxy.state.penalty`) for ``penalty_time``: every instance sharing the store refuses its
next connection (``PENALTY_BOX``). In observe mode (and under ``spamgate explain``) the symbol
is logged but nobody is boxed.
Clients in ``relay.relay_networks`` and ``exempt_networks`` are never boxed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import structlog

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import OffByDefault
from proxy.checks.storeutil import STORE_TEMPERROR
from proxy.config.fields import opt
from proxy.observability import metrics
from proxy.state.base import StoreError
from proxy.state.penalty import PenaltyBox

log = structlog.get_logger("spamgate.sharing")

TRAP_HIT = SymbolDef(
    "TRAP_HIT",
    "The recipient (evidence) is a spamtrap; the client IP went into the fleet-wide penalty box.",
    score=0.0,
    action="reject",
    reply="550 5.1.1 <{evidence}>: Recipient address rejected: User unknown",
    remedy="Remove the address from your lists: it never belonged to anyone; use confirmed opt-in.",
)


@dataclass(frozen=True, slots=True)
class SpamtrapOptions(OffByDefault):
    addresses: list[str] = opt([], "Trap addresses (compared case-insensitively).")
    domains: list[str] = opt(
        [], "Trap domains: every recipient there is a trap ('.example.org' also matches subdomains)."
    )
    penalty_time: float = opt(
        "24h", "How long a client that hit a trap stays in the fleet-wide penalty box.", kind="duration"
    )
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients never penalised (besides relay.relay_networks); default: this host.",
        kind="cidrs",
    )


class Spamtrap(Check):
    name = "spamtrap"
    stage = Stage.RCPT
    symbols = (TRAP_HIT,)
    Options = SpamtrapOptions
    description = "Trap addresses and domains: refused like unknown users, the client penalised fleet-wide."
    io = True

    async def start(self) -> None:
        o: SpamtrapOptions = self.options
        self.addresses = frozenset(a.lower() for a in o.addresses)
        self.domains = frozenset(d.lower() for d in o.domains if not d.startswith("."))
        self.suffixes = tuple(d.lower() for d in o.domains if d.startswith("."))
        self.exempt = [
            ipaddress.ip_network(n, strict=False)
            for n in [*self.services.config.relay.relay_networks, *o.exempt_networks]
        ]
        self.box = PenaltyBox(self.services.store)

    def is_trap(self, rcpt: str) -> bool:
        addr = rcpt.lower()
        if addr in self.addresses:
            return True
        domain = addr.rpartition("@")[2]
        return domain in self.domains or (bool(self.suffixes) and domain.endswith(self.suffixes))

    def _exempt(self, ctx: CheckContext) -> bool:
        return any(ctx.conn.ip in n for n in self.exempt)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if not self.is_trap(ctx.rcpt):
            return []
        hit = TRAP_HIT.hit(ctx.rcpt)
        metrics.sharing_event("trap_hit")
        if self.options.mode == "observe" or ctx.conn.notes.get("dry_run") or self._exempt(ctx):
            return [hit]
        try:
            reason = f"TRAP_HIT{{{ctx.rcpt}}}"
            entry = await self.box.add(ctx.conn.ip_str, reason, self.options.penalty_time)
        except StoreError:
            return [hit, STORE_TEMPERROR.hit(self.name)]
        metrics.sharing_event("penalty_added")
        log.info("penalty_added", ip=entry.ip, reason=entry.reason, until=int(entry.until))
        return [hit]
