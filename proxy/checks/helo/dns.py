"""The DNS side of the HELO/EHLO name (HELO stage): resolves, matches the client, not
dynamic, not one of ours.

- ``HELO_FORGED_OURS``: the name is our ``server.hostname``, one of ``relay.local_domains`` or
  ``own_names``, or an address literal / bare address of ours (``own_addresses`` and the
  listen addresses), sent by a client outside ``own_addresses``. No DNS is needed for that.
- ``HELO_NX``: a fully qualified name with no A, AAAA or MX record (evidence: nxdomain or
  no-address).
- ``HELO_NOT_CLIENT``: it resolves, but neither to the client address nor equal to the
  client's forward-confirmed reverse name (common for legitimate senders: low score).
- ``HELO_DYNAMIC``: the name looks dynamic/generic (the rDNS patterns, or the client address in it).
- ``HELO_TEMPERROR``: a lookup failed (weight 0); ``on_temperror`` may defer the client.

Syntax problems (bare IP, not a FQDN, invalid) are :mod:`proxy.checks.helo.syntax`'s; this
check skips such names.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import dynamic_match, load_patterns, on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt, parse_hostport
from proxy.smtp.address import is_valid_domain, looks_like_ip, parse_address_literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HELO_FORGED_OURS = SymbolDef(
    "HELO_FORGED_OURS",
    "The client greets with our own host name, one of our domains or one of our addresses.",
    score=8.0,
    remedy="Configure the sending server to greet with its own fully qualified host name.",
)
HELO_NX = SymbolDef(
    "HELO_NX",
    "The HELO name does not resolve (no A, AAAA or MX record).",
    score=2.0,
    remedy="Greet with a host name that has an A/AAAA record, ideally the server's PTR name.",
)
HELO_NOT_CLIENT = SymbolDef(
    "HELO_NOT_CLIENT",
    "The HELO name resolves, but not to the client address, and is not its reverse name.",
    score=0.5,
    remedy="Greet with the server's own host name, whose A/AAAA and PTR records match its address.",
)
HELO_DYNAMIC = SymbolDef(
    "HELO_DYNAMIC",
    "The HELO name looks dynamic or generic (residential, DHCP, address in the name).",
    score=2.0,
    remedy="Greet with the mail server's own static host name.",
)
HELO_TEMPERROR = SymbolDef(
    "HELO_TEMPERROR",
    "The HELO name could not be looked up (timeout, SERVFAIL).",
    score=0.0,
    remedy="Nothing for the sender; the DNS failed. Retrying later helps.",
)


@dataclass(frozen=True, slots=True)
class HeloDnsOptions(BaseOptions):
    on_temperror: str = on_temperror_opt()
    dynamic_patterns: str = opt(
        "", "File of dynamic/generic host name patterns; empty: rules/patterns/dynamic-hostnames.txt."
    )
    own_names: list[str] = opt(
        [], "More names that are ours (besides server.hostname and relay.local_domains)."
    )
    own_addresses: list[str] = opt(
        [],
        "Our networks: a HELO naming one of these addresses is forged unless the client is inside "
        "(the listen addresses count too).",
        kind="cidrs",
    )


class HeloDns(Check):
    name = "helo_dns"
    stage = Stage.HELO
    symbols = (HELO_FORGED_OURS, HELO_NX, HELO_NOT_CLIENT, HELO_DYNAMIC, HELO_TEMPERROR)
    Options = HeloDnsOptions
    description = "HELO name resolves, matches the client, is not dynamic and is not ours."
    io = True

    def __init__(self, options: HeloDnsOptions, services: Services) -> None:
        super().__init__(options, services)
        cfg = services.config
        self.patterns = load_patterns(options.dynamic_patterns)
        names = [cfg.server.hostname, *cfg.relay.local_domains, *options.own_names]
        self.own_names = frozenset(n.lower().rstrip(".") for n in names if n)
        nets: list[Network] = [ipaddress.ip_network(n, strict=False) for n in options.own_addresses]
        for item in cfg.server.listen:
            try:
                addr = ipaddress.ip_address(parse_hostport(item)[0])
            except (ValueError, TypeError):
                continue
            if not addr.is_unspecified:
                nets.append(ipaddress.ip_network(addr))
        self.own_nets = nets

    def _ours(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in n for n in self.own_nets)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        conn = ctx.conn
        helo = conn.helo.strip().rstrip(".").lower()
        if not helo:
            return []
        client_ours = self._ours(conn.ip)
        literal = parse_address_literal(helo) if helo.startswith("[") else None
        if literal is None and looks_like_ip(helo):
            literal = ipaddress.ip_address(helo)
        if literal is not None:
            if not client_ours and literal != conn.ip and self._ours(literal):
                return [HELO_FORGED_OURS.hit(helo)]
            return []
        if not is_valid_domain(helo, utf8=True) or "." not in helo:
            return []
        if helo in self.own_names:
            return [] if client_ours else [HELO_FORGED_OURS.hit(helo)]
        resolver = self.services.resolver
        if resolver is None:
            return []
        o: HeloDnsOptions = self.options
        hits: list[Symbol] = []
        why = dynamic_match(helo, conn.ip, self.patterns)
        if why:
            hits.append(HELO_DYNAMIC.hit(f"{helo}~{why}"))
        a, aaaa = await asyncio.gather(resolver.lookup(helo, "A"), resolver.lookup(helo, "AAAA"))
        addresses = {str(x) for r in (a, aaaa) if r.ok for x in r.records}
        if not addresses:
            if a.failed or aaaa.failed:
                return hits + temperror(HELO_TEMPERROR, helo, o.on_temperror)
            if a.status == "nxdomain":
                return [*hits, HELO_NX.hit(f"{helo}:nxdomain")]
            mx = await resolver.lookup(helo, "MX")
            if mx.failed:
                return hits + temperror(HELO_TEMPERROR, helo, o.on_temperror)
            if not mx.ok:
                return [*hits, HELO_NX.hit(f"{helo}:no-address")]
        if not _contains(addresses, conn.ip) and helo != conn.reverse_name.lower():
            hits.append(HELO_NOT_CLIENT.hit(f"{helo}!={conn.ip}"))
        return hits


def _contains(addresses: set[str], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for a in addresses:
        try:
            if ipaddress.ip_address(a) == ip:
                return True
        except ValueError:
            continue
    return False
