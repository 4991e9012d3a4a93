"""URI block lists (DBL, SURBL, URIBL style) of the links in the message (DATA stage).

Every link and bare host of the text and HTML parts (:mod:`proxy.content.urls`, shared analysis
of :mod:`proxy.checks.contentutil`) is reduced to its registrable domain with the Public Suffix
List (``www.shop.example.co.uk`` -> ``example.co.uk``); IPv4 addresses are kept and queried
reversed (``4.3.2.1.zone``, as SURBL and URIBL list them). The distinct targets, in order of
appearance, are looked up in every healthy list of ``zones`` (the DNSBL item syntax
``zone[=pattern][*weight]`` of :mod:`proxy.dns.lists`), at most ``max_lookups`` targets per
message; ``ignore_domains`` are never looked up.

Symbols: ``URIBL_LISTED{zone:domain,...}`` once per list that lists any target, scored with the
list's weight; ``URIBL_TEMPERROR{zones}`` when a list could not be queried (weight 0, never "not
listed"; ``on_temperror = "tempfail"`` adds ``DNS_TEMPFAIL``).

List health, as for the DNSBLs: a probe at start and every ``health_interval`` (RFC 5782: the
name ``test`` must be listed and ``invalid`` not; ``probe_listed`` / ``probe_clean`` change them,
``probes`` per list, an empty ``probe_listed`` skips that half) and any error answer
(127.255.255.x, outside 127/8, or 127.0.0.1, which URIBL and SURBL answer to refused queries)
disable the list with a warning until a probe passes again. No list is configured by default.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import structlog

from proxy.checks.base import CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.contentutil import content, registrable
from proxy.checks.dnsutil import ListHealthCheck, on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import ConfigError, opt
from proxy.content.urls import Link
from proxy.dns.lists import DnsList, parse_item, reversed_ip

log = structlog.get_logger("spamgate.uribl")

URIBL_LISTED = SymbolDef(
    "URIBL_LISTED",
    "A link in the message points to a domain or address on a URI block list (evidence "
    "zone:domain; score: the list's weight).",
    score=1.0,
    remedy="Do not link to listed sites (the zone in the evidence names the list; link shorteners and "
    "compromised sites are often listed). The domain's owner can request delisting.",
)
URIBL_TEMPERROR = SymbolDef(
    "URIBL_TEMPERROR",
    "A URI block list could not be queried (timeout, SERVFAIL); evidence names the zones. "
    "Never 'not listed'.",
    score=0.0,
    remedy="Nothing for the sender; the receiving site's DNS failed. Retrying later helps.",
)


@dataclass(frozen=True, slots=True)
class UriblOptions(BaseOptions):
    zones: list[str] = opt(
        [],
        "URI lists as 'zone[=pattern][*weight]', e.g. 'dbl.spamhaus.org=127.0.1.[2..99]*5', "
        "'multi.surbl.org*4'. None by default.",
    )
    max_lookups: int = opt(
        20, "Distinct domains and addresses looked up per message (first ones first).", minimum=1
    )
    ignore_domains: list[str] = opt(
        [], "Registrable domains never looked up (your own, your providers'): fewer queries."
    )
    check_ips: bool = opt(True, "Look up links to IPv4 addresses too (reversed, as SURBL/URIBL list them).")
    on_temperror: str = on_temperror_opt()
    health_check: bool = opt(True, "Probe each list at start and every health_interval.")
    health_interval: float = opt("5m", "Time between health probes of the lists.", kind="duration")
    probe_listed: str = opt("test", "A name every healthy list lists (RFC 5782); empty: not probed.")
    probes: list[str] = opt(
        [],
        "Per-list test entries as 'zone=name', for lists that list another name than probe_listed "
        "(e.g. 'dbl.spamhaus.org=dbltest.com', 'multi.uribl.com=test.uribl.com').",
    )
    probe_clean: str = opt("invalid", "A name no healthy list lists (RFC 5782).")


def targets(links: list[Link], ignore: frozenset[str], check_ips: bool) -> list[tuple[str, str]]:
    """(shown, query key) of each distinct registrable domain or IPv4 address, in order."""
    out: dict[str, str] = {}
    for link in links:
        if link.is_ip:
            ip = ipaddress.ip_address(link.host)
            if check_ips and ip.version == 4 and ip.is_global and link.host not in out:
                out[link.host] = reversed_ip(ip)
            continue
        domain = registrable(link.host)
        if domain and domain not in out and domain not in ignore:
            out[domain] = domain
    return list(out.items())


class Uribl(ListHealthCheck):
    name = "uribl"
    stage = Stage.DATA
    symbols = (URIBL_LISTED, URIBL_TEMPERROR)
    Options = UriblOptions
    description = "URI block lists (DBL/SURBL/URIBL style) of the links and hosts in the message."
    io = True

    def __init__(self, options: UriblOptions, services: Services) -> None:
        super().__init__(options, services)
        self.lists: list[DnsList] = []
        for i, item in enumerate(options.zones):
            try:
                self.lists.append(DnsList(parse_item(item), "uribl"))
            except ValueError as exc:
                raise ConfigError(f"checks.uribl.zones[{i}]", str(exc)) from None
        self.ignore = frozenset(d.lower().strip(".") for d in options.ignore_domains)
        self.probe_names: dict[str, str] = {}
        for i, item in enumerate(options.probes):
            zone, sep, name = item.partition("=")
            if not sep or not zone.strip() or not name.strip():
                raise ConfigError(f"checks.uribl.probes[{i}]", f"expected 'zone=name', got {item!r}")
            self.probe_names[zone.strip().lower().rstrip(".")] = name.strip().lower().rstrip(".")

    async def probe_lists(self) -> None:
        o: UriblOptions = self.options
        await asyncio.gather(
            *(
                lst.probe(
                    self.services.resolver, self.probe_names.get(lst.zone, o.probe_listed), o.probe_clean
                )
                for lst in self.lists
            )
        )

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        resolver = self.services.resolver
        lists = [lst for lst in self.lists if lst.healthy]
        if not lists or resolver is None:
            return []
        o: UriblOptions = self.options
        found = await content(ctx, self.services)
        wanted = targets(found.links, self.ignore, o.check_ips)
        if len(wanted) > o.max_lookups:
            log.debug("uribl_capped", ref=ctx.txn.ref if ctx.txn else "", targets=len(wanted))
            wanted = wanted[: o.max_lookups]
        if not wanted:
            return []
        pairs = [(lst, shown, key) for lst in lists for shown, key in wanted]
        answers = await asyncio.gather(*(lst.lookup(resolver, key) for lst, _, key in pairs))
        listed: dict[str, list[str]] = {}
        failed: dict[str, None] = {}
        for (lst, shown, _), ans in zip(pairs, answers, strict=True):
            if ans.failed:
                failed[lst.zone] = None
            elif ans.unusable or "127.0.0.1" in ans.listed:
                lst.disable(ans.unusable or "answer 127.0.0.1 (query refused)")
            elif ans.listed:
                listed.setdefault(lst.zone, []).append(shown)
        hits: list[Symbol] = []
        for lst in lists:
            if lst.zone in listed and lst.healthy:
                hits.append(
                    URIBL_LISTED.hit(f"{lst.zone}:{','.join(listed[lst.zone])}", score=lst.spec.weight)
                )
        if failed:
            hits += temperror(URIBL_TEMPERROR, ",".join(failed), o.on_temperror)
        return hits
