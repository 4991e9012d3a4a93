"""Reverse DNS of the client (connect stage): PTR present, forward-confirmed, not generic.

- No PTR record (NXDOMAIN/NODATA): ``RDNS_NONE``.
- PTR names of which none resolves back to the client address: ``RDNS_NOT_FCRDNS``.
- The confirmed name (else the first PTR name) looks dynamic or generic (patterns in
  ``rules/patterns/dynamic-hostnames.txt`` or the address embedded in the name): ``RDNS_DYNAMIC``.
- A DNS failure on the way: ``RDNS_TEMPERROR`` (weight 0), never "no PTR".

The forward-confirmed name is stored in ``conn.reverse_name``: the Received header and the
XCLIENT NAME attribute use it (``unknown`` otherwise, as Postfix does). At most ``max_ptr`` PTR
names are tried. A client with no symbol is remembered for ``pass_ttl`` (the pass cache) and
scores nothing here meanwhile; its rDNS is still resolved (usually from the resolver's cache)
so that ``conn.reverse_name`` is right.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.connect import pass_cache
from proxy.checks.dnsutil import dynamic_match, load_patterns, on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

RDNS_NONE = SymbolDef(
    "RDNS_NONE",
    "The client address has no reverse DNS (PTR) record.",
    score=2.0,
    remedy="Ask the owner of the address block (your provider) to set a PTR record naming the "
    "mail server, with a matching A/AAAA record.",
)
RDNS_NOT_FCRDNS = SymbolDef(
    "RDNS_NOT_FCRDNS",
    "The PTR name of the client does not resolve back to its address (not forward-confirmed).",
    score=1.5,
    remedy="Publish an A/AAAA record for the PTR name pointing to the server's address.",
)
RDNS_DYNAMIC = SymbolDef(
    "RDNS_DYNAMIC",
    "The client's reverse name looks dynamic or generic (residential, DHCP, address in the name).",
    score=2.0,
    remedy="Send through your provider's relay, or get a static address with a PTR naming the mail server.",
)
RDNS_TEMPERROR = SymbolDef(
    "RDNS_TEMPERROR",
    "The reverse DNS of the client could not be looked up (timeout, SERVFAIL).",
    score=0.0,
    remedy="Nothing for the sender; usually the DNS servers of the address block are slow. Retry later.",
)


@dataclass(frozen=True, slots=True)
class RdnsOptions(BaseOptions):
    on_temperror: str = on_temperror_opt()
    dynamic_patterns: str = opt(
        "", "File of dynamic/generic host name patterns; empty: rules/patterns/dynamic-hostnames.txt."
    )
    max_ptr: int = opt(4, "PTR names tried for forward confirmation.", minimum=1)
    pass_ttl: float = opt(
        "1h", "A client with good rDNS skips the test for this long (0: always look up).", kind="duration"
    )
    exempt: list[str] = opt([], "Client networks not tested (your own networks).", kind="cidrs")


class Rdns(Check):
    name = "rdns"
    stage = Stage.CONNECT
    symbols = (RDNS_NONE, RDNS_NOT_FCRDNS, RDNS_DYNAMIC, RDNS_TEMPERROR)
    Options = RdnsOptions
    description = "Reverse DNS of the client: present, forward-confirmed, not dynamic."
    io = True

    def __init__(self, options: RdnsOptions, services: Services) -> None:
        super().__init__(options, services)
        self.patterns = load_patterns(options.dynamic_patterns)
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in options.exempt]
        self._dynamic_seen: dict[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address], str] = {}

    def _dynamic(self, name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """``dynamic_match`` remembered per (name, address): the patterns run once per client,
        not on each of its connections (bounded; a reload builds a new check)."""
        key = (name, ip)
        why = self._dynamic_seen.get(key)
        if why is None:
            why = dynamic_match(name, ip, self.patterns)
            if len(self._dynamic_seen) >= 4096:
                self._dynamic_seen.clear()
            self._dynamic_seen[key] = why
        return why

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        conn = ctx.conn
        ip = conn.ip
        resolver = self.services.resolver
        if resolver is None or any(ip in n for n in self.exempt):
            return []
        o: RdnsOptions = self.options
        cached = await pass_cache.passed(self.services, conn.ip_str, self.name, o.pass_ttl)
        hits = await self._evaluate(ctx, resolver, o)
        if cached:
            return []
        if not hits:
            await pass_cache.remember(self.services, conn.ip_str, self.name, o.pass_ttl)
        return hits

    async def _evaluate(self, ctx: CheckContext, resolver: Any, o: RdnsOptions) -> list[Symbol]:
        conn = ctx.conn
        ip = conn.ip
        ptr = await resolver.lookup(ip.reverse_pointer, "PTR")
        if ptr.failed:
            return temperror(RDNS_TEMPERROR, f"PTR {ip}", o.on_temperror)
        if not ptr.ok:
            return [RDNS_NONE.hit(str(ip))]
        names = [str(n).lower() for n in ptr.records[: o.max_ptr]]
        rdtype = "A" if ip.version == 4 else "AAAA"
        forward = await asyncio.gather(*(resolver.lookup(n, rdtype) for n in names))
        confirmed = ""
        fwd_failed = False
        for name, res in zip(names, forward, strict=True):
            if res.failed:
                fwd_failed = True
            elif res.ok and any(_same(a, ip) for a in res.records):
                confirmed = name
                break
        hits: list[Symbol] = []
        if confirmed:
            conn.reverse_name = confirmed
        elif fwd_failed:
            return temperror(RDNS_TEMPERROR, f"{rdtype} {names[0]}", o.on_temperror)
        else:
            hits.append(RDNS_NOT_FCRDNS.hit(names[0]))
        shown = confirmed or names[0]
        why = self._dynamic(shown, ip)
        if why:
            hits.append(RDNS_DYNAMIC.hit(f"{shown}~{why}"))
        return hits


def _same(text: object, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(str(text)) == ip
    except ValueError:
        return False
