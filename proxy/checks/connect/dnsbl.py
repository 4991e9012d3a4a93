"""DNS block and allow lists of client addresses (connect stage), queried in parallel.

``[checks.dnsbl] zones`` lists items ``zone[=pattern][*weight]`` (syntax in
:mod:`proxy.dns.lists`). Each list that returns a matching code adds ``RBL_LISTED`` with the
item's weight as its score (evidence ``zone:code``); a negative weight makes it an allow list
and the symbol ``DNSWL_LISTED``. Weighted scoring: no list should reject on its own; the sum
of the listings and the other evidence does. IPv4 is queried reversed (``4.3.2.1.zone``),
IPv6 as 32 nibbles.

A list that fails its health probe (127.0.0.2 listed, 127.0.0.1 not; at start and every
``health_interval``) or answers an error code (127.255.255.x: public resolver refused, over
quota) is disabled with a warning and ``metrics.list_health(zone, False)`` until a probe passes
again. A DNS failure is ``RBL_TEMPERROR`` (weight 0), never "not listed"; ``on_temperror``
decides whether it also defers the client. A client no list matched is remembered in the pass
cache for ``pass_ttl`` and not looked up again meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import structlog

from proxy.checks.base import CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.connect import pass_cache
from proxy.checks.dnsutil import DNS_TEMPFAIL, ListHealthCheck, on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import ConfigError, opt
from proxy.dns.lists import DnsList, parse_item, reversed_ip

log = structlog.get_logger("spamgate.dnsbl")

RBL_LISTED = SymbolDef(
    "RBL_LISTED",
    "The client address is on a DNS block list (evidence zone:code; score: the list's weight).",
    score=1.0,
    remedy="Look the address up on the list's web site (the zone in the evidence), fix the cause "
    "(infected host, open relay, dynamic address) and request delisting.",
)
DNSWL_LISTED = SymbolDef(
    "DNSWL_LISTED",
    "The client address is on a DNS allow list (evidence zone:code; score: the list's negative weight).",
    score=-1.0,
    remedy="Nothing to fix: the address has a good reputation.",
)
RBL_TEMPERROR = SymbolDef(
    "RBL_TEMPERROR",
    "A DNS list could not be queried (timeout, SERVFAIL); evidence names the zones. Never 'not listed'.",
    score=0.0,
    remedy="Nothing for the sender; the receiving site's DNS failed. Retrying later helps.",
)


@dataclass(frozen=True, slots=True)
class DnsblOptions(BaseOptions):
    zones: list[str] = opt(
        [],
        "DNS lists as 'zone[=pattern][*weight]', e.g. 'zen.spamhaus.org=127.0.0.[2..11]*6'; "
        "a negative weight is an allow list. None by default.",
    )
    on_temperror: str = on_temperror_opt()
    health_check: bool = opt(True, "Probe each list at start and every health_interval (127.0.0.2/1).")
    health_interval: float = opt("5m", "Time between health probes of the lists.", kind="duration")
    pass_ttl: float = opt(
        "1h",
        "A client no block list matched skips the lists for this long (0: always look up).",
        kind="duration",
    )
    exempt: list[str] = opt([], "Client networks never looked up (your own networks).", kind="cidrs")


class Dnsbl(ListHealthCheck):
    name = "dnsbl"
    stage = Stage.CONNECT
    symbols = (RBL_LISTED, DNSWL_LISTED, RBL_TEMPERROR, DNS_TEMPFAIL)
    Options = DnsblOptions
    description = "DNS block and allow lists of the client address (DNSBL/DNSWL)."
    io = True

    def __init__(self, options: DnsblOptions, services: Services) -> None:
        super().__init__(options, services)
        self.lists: list[DnsList] = []
        for i, item in enumerate(options.zones):
            try:
                self.lists.append(DnsList(parse_item(item), "dnsbl"))
            except ValueError as exc:
                raise ConfigError(f"checks.dnsbl.zones[{i}]", str(exc)) from None
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in options.exempt]

    async def probe_lists(self) -> None:
        await asyncio.gather(*(lst.probe(self.services.resolver) for lst in self.lists))

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        ip = ctx.conn.ip
        resolver = self.services.resolver
        lists = [lst for lst in self.lists if lst.healthy]
        if not lists or resolver is None or any(ip in n for n in self.exempt):
            return []
        o: DnsblOptions = self.options
        if await pass_cache.passed(self.services, ctx.conn.ip_str, self.name, o.pass_ttl):
            return []
        key = reversed_ip(ip)
        answers = await asyncio.gather(*(lst.lookup(resolver, key) for lst in lists))
        hits: list[Symbol] = []
        failed: list[str] = []
        blocked = False
        for lst, ans in zip(lists, answers, strict=True):
            if ans.failed:
                failed.append(lst.zone)
                continue
            if ans.unusable:
                lst.disable(ans.unusable)
                continue
            if ans.listed:
                weight = lst.spec.weight
                sym = DNSWL_LISTED if weight < 0 else RBL_LISTED
                blocked = blocked or weight > 0
                hits.append(sym.hit(f"{lst.zone}:{','.join(sorted(ans.listed))}", score=weight))
        if failed:
            hits += temperror(RBL_TEMPERROR, ",".join(failed), o.on_temperror)
        elif not blocked:
            await pass_cache.remember(self.services, ctx.conn.ip_str, self.name, o.pass_ttl)
        return hits
