"""Relay control (RCPT stage): only our local domains, or clients in relay_networks.

Never an open relay: this check cannot be disabled or put in observe mode, and its symbol
is always enforced. A recipient outside ``relay.local_domains`` (subdomains do not count:
list them) from a client outside ``relay.relay_networks`` gets 554 5.7.1 and never reaches
the downstream. Source-routed and percent-hack recipients are refused as well.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.smtp.address import is_valid_mailbox

RCPT_RELAY_DENIED = SymbolDef(
    "RCPT_RELAY_DENIED",
    "The recipient's domain is not one of ours and the client may not relay.",
    score=0.0,
    action="reject",
    reply="554 5.7.1 Relay access denied",
    always_enforced=True,
    remedy="Send to this server only for the domains it serves; use your own provider's server to relay.",
)
RCPT_INVALID = SymbolDef(
    "RCPT_INVALID",
    "The recipient address is not a valid mailbox (or uses the %-hack or '!' routing).",
    score=0.0,
    action="reject",
    reply="553 5.1.3 Recipient address rejected: invalid address",
    always_enforced=True,
    remedy="Check the recipient address.",
)


@dataclass(frozen=True, slots=True)
class RelayControlOptions(BaseOptions):
    pass


class RelayControl(Check):
    name = "relay_control"
    stage = Stage.RCPT
    symbols = (RCPT_RELAY_DENIED, RCPT_INVALID)
    Options = RelayControlOptions
    description = "Only local domains, or relaying clients (never an open relay)."

    async def start(self) -> None:
        relay = self.services.config.relay
        self.domains = frozenset(d.lower().rstrip(".") for d in relay.local_domains)
        self.networks = [ipaddress.ip_network(n, strict=False) for n in relay.relay_networks]

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        rcpt = ctx.rcpt
        local, _, domain = rcpt.rpartition("@")
        utf8 = bool(ctx.txn and ctx.txn.smtputf8)
        if not is_valid_mailbox(rcpt, utf8=utf8) or "%" in local or "!" in local:
            # postmaster without a domain is accepted by RFC 5321 4.5.1; we need a domain to route it.
            return [RCPT_INVALID.hit(rcpt[:200])]
        if domain.lower().rstrip(".") in self.domains:
            return []
        ip = ctx.conn.ip
        if any(ip in n for n in self.networks):
            return []
        return [RCPT_RELAY_DENIED.hit(domain.lower()[:200])]
