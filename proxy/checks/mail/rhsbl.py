"""RHSBL: DNS block lists of domains, applied to the sender domain (MAIL stage).

``[checks.rhsbl] zones`` uses the DNSBL item syntax ``zone[=pattern][*weight]``
(:mod:`proxy.dns.lists`); the query is ``<sender domain>.<zone>``. Each matching list adds
``RHSBL_LISTED`` with the item's weight as its score (evidence ``zone:domain:code``). A list
answering an error code (127.255.255.x, or outside 127/8) is disabled with a warning. A DNS
failure is ``RHSBL_TEMPERROR`` (weight 0), never "not listed". The null sender is skipped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.mail.sender_domain import sender_domain
from proxy.checks.options import BaseOptions
from proxy.config.fields import ConfigError, opt
from proxy.dns.lists import DnsList, parse_item

RHSBL_LISTED = SymbolDef(
    "RHSBL_LISTED",
    "The sender domain is on a domain block list (evidence zone:domain:code; score: the list's weight).",
    score=1.0,
    remedy="Look the domain up on the list's web site (the zone in the evidence) and request delisting.",
)
RHSBL_TEMPERROR = SymbolDef(
    "RHSBL_TEMPERROR",
    "A domain block list could not be queried (timeout, SERVFAIL); evidence names the zones.",
    score=0.0,
    remedy="Nothing for the sender; the receiving site's DNS failed. Retrying later helps.",
)


@dataclass(frozen=True, slots=True)
class RhsblOptions(BaseOptions):
    zones: list[str] = opt(
        [],
        "Domain lists as 'zone[=pattern][*weight]', e.g. 'dbl.spamhaus.org=127.0.1.[2..99]*4'. "
        "None by default.",
    )
    on_temperror: str = on_temperror_opt()


class Rhsbl(Check):
    name = "rhsbl"
    stage = Stage.MAIL
    symbols = (RHSBL_LISTED, RHSBL_TEMPERROR)
    Options = RhsblOptions
    description = "Domain block lists (RHSBL) of the sender domain."
    io = True

    def __init__(self, options: RhsblOptions, services: Services) -> None:
        super().__init__(options, services)
        self.lists: list[DnsList] = []
        for i, item in enumerate(options.zones):
            try:
                self.lists.append(DnsList(parse_item(item), "rhsbl"))
            except ValueError as exc:
                raise ConfigError(f"checks.rhsbl.zones[{i}]", str(exc)) from None

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        assert ctx.txn is not None
        lists = [lst for lst in self.lists if lst.healthy]
        resolver = self.services.resolver
        domain = sender_domain(ctx.txn.mail_from)
        if not lists or not domain or resolver is None:
            return []
        answers = await asyncio.gather(*(lst.lookup(resolver, domain) for lst in lists))
        hits: list[Symbol] = []
        failed: list[str] = []
        for lst, ans in zip(lists, answers, strict=True):
            if ans.failed:
                failed.append(lst.zone)
            elif ans.unusable:
                lst.disable(ans.unusable)
            elif ans.listed:
                codes = ",".join(sorted(ans.listed))
                hits.append(RHSBL_LISTED.hit(f"{lst.zone}:{domain}:{codes}", score=lst.spec.weight))
        if failed:
            hits += temperror(RHSBL_TEMPERROR, ",".join(failed), self.options.on_temperror)
        return hits
