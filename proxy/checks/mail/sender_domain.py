"""The sender domain can receive mail (MAIL stage): it has an MX, else an A/AAAA record.

- ``SENDER_NULL_MX``: the domain publishes a null MX (``MX 0 .``, RFC 7505): it sends no mail.
  Rejected by default with ``550 5.7.27``.
- ``SENDER_DOMAIN_NX``: no such domain (evidence ``nxdomain``), or neither MX nor A/AAAA
  (evidence ``no-mail-host``). Deferred by default with ``451 4.1.8``, like Postfix's
  ``reject_unknown_sender_domain`` (a site rule can make it ``550 5.1.8``).
- ``SENDER_DOMAIN_TEMPERROR``: a lookup failed (weight 0); ``on_temperror`` may defer.

The null sender ``<>``, address-literal domains (see ``sender_syntax``) and our own
``relay.local_domains`` (they exist by definition) are skipped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.smtp.address import is_valid_domain

SENDER_NULL_MX = SymbolDef(
    "SENDER_NULL_MX",
    "The sender domain publishes a null MX (RFC 7505): it declares that it sends and receives no mail.",
    score=0.0,
    action="reject",
    reply="550 5.7.27 Sender address has null MX",
    remedy="Send from a domain that accepts mail (remove the null MX if the domain does send mail).",
)
SENDER_DOMAIN_NX = SymbolDef(
    "SENDER_DOMAIN_NX",
    "The sender domain does not exist, or has no MX, A or AAAA record to receive replies.",
    score=4.0,
    action="tempfail",
    reply="451 4.1.8 Sender address rejected: domain not found",
    remedy="Send from an existing domain with an MX (or A) record, so that replies and bounces reach you.",
)
SENDER_DOMAIN_TEMPERROR = SymbolDef(
    "SENDER_DOMAIN_TEMPERROR",
    "The sender domain could not be looked up (timeout, SERVFAIL).",
    score=0.0,
    remedy="Nothing for the sender unless its DNS servers fail; retrying later helps.",
)


@dataclass(frozen=True, slots=True)
class SenderDomainOptions(BaseOptions):
    on_temperror: str = on_temperror_opt()


def sender_domain(mail_from: str) -> str:
    """The ASCII (IDNA) domain of a sender, '' for <> and address literals or bad domains."""
    domain = mail_from.rpartition("@")[2].strip().rstrip(".").lower()
    if not mail_from or not domain or domain.startswith("["):
        return ""
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    return domain if is_valid_domain(domain) and "." in domain else ""


class SenderDomain(Check):
    name = "sender_domain"
    stage = Stage.MAIL
    symbols = (SENDER_NULL_MX, SENDER_DOMAIN_NX, SENDER_DOMAIN_TEMPERROR)
    Options = SenderDomainOptions
    description = "The sender domain exists and can receive mail (MX, else A/AAAA; null MX)."
    io = True

    def __init__(self, options: SenderDomainOptions, services: Services) -> None:
        super().__init__(options, services)
        self.local = frozenset(d.lower().rstrip(".") for d in services.config.relay.local_domains)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        assert ctx.txn is not None
        domain = sender_domain(ctx.txn.mail_from)
        resolver = self.services.resolver
        if not domain or resolver is None or domain in self.local:
            return []
        o: SenderDomainOptions = self.options
        mx = await resolver.lookup(domain, "MX")
        if mx.ok:
            hosts = {h for _, h in mx.records}
            if hosts == {""}:
                return [SENDER_NULL_MX.hit(domain)]
            return []
        if mx.failed:
            return temperror(SENDER_DOMAIN_TEMPERROR, f"MX {domain}", o.on_temperror)
        if mx.status == "nxdomain":
            return [SENDER_DOMAIN_NX.hit(f"{domain}:nxdomain")]
        a, aaaa = await asyncio.gather(resolver.lookup(domain, "A"), resolver.lookup(domain, "AAAA"))
        if a.ok or aaaa.ok:
            return []
        if a.failed or aaaa.failed:
            return temperror(SENDER_DOMAIN_TEMPERROR, f"A {domain}", o.on_temperror)
        return [SENDER_DOMAIN_NX.hit(f"{domain}:no-mail-host")]
