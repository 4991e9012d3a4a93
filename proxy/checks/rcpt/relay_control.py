"""Relay control (RCPT stage): only our local domains, or clients in relay_networks.

Never an open relay: this check cannot be disabled or put in observe mode, and its symbol
is always enforced. A recipient outside ``relay.local_domains`` and the files of
``tables.local_domains_files`` (subdomains do not count:
list them) from a client outside ``relay.relay_networks`` gets 554 5.7.1 and never reaches
the downstream.

Routing inside a local part is refused for clients that may not relay: ``%`` (the percent
hack), ``!`` (UUCP bang paths) and ``@`` (possible only quoted:
``"victim@elsewhere.example"@example.test``), quoted or not. A downstream that dequotes the
local part (Postfix's default ``resolve_dequoted_address = yes``) would otherwise route such a
recipient to the foreign domain, relaying for anyone who can reach spamgate.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.smtp.address import is_valid_mailbox

ROUTING_CHARACTERS = ("@", "%", "!")

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
    "The recipient address is not a valid mailbox, or routes inside its local part "
    "('%', '!' or a quoted '@') from a client that may not relay.",
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
        self.tables = self.services.extras.get("tables")  # proxy.state.tables.Tables: local domain files

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        rcpt = ctx.rcpt
        local, _, domain = rcpt.rpartition("@")
        utf8 = bool(ctx.txn and ctx.txn.smtputf8)
        if rcpt.lower() == "postmaster":
            return []  # RFC 5321 4.5.1: <postmaster> without a domain must be accepted
        if not is_valid_mailbox(rcpt, utf8=utf8):
            return [RCPT_INVALID.hit(rcpt[:200])]
        ip = ctx.conn.ip
        if any(ip in n for n in self.networks):
            return []
        if any(c in local for c in ROUTING_CHARACTERS):
            return [RCPT_INVALID.hit(rcpt[:200])]
        domain = domain.lower().rstrip(".")
        if domain in self.domains or (self.tables is not None and domain in self.tables.domains):
            return []
        return [RCPT_RELAY_DENIED.hit(domain[:200])]
