"""HELO/EHLO argument syntax (HELO stage): the checks that need no DNS.

A bare IP without brackets, something that is neither a domain nor an address literal, a
name that is not fully qualified, and an address literal that is not the client's address.
The DNS-based HELO checks (resolves, matches the reverse name, dynamic) are in helo/dns.py.
"""

from __future__ import annotations

import ipaddress

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.smtp.address import is_valid_domain, looks_like_ip, parse_address_literal

HELO_BARE_IP = SymbolDef(
    "HELO_BARE_IP",
    "HELO is an IP address without the [brackets] of an address literal.",
    score=2.0,
    remedy="Configure the sending server to greet with its fully qualified host name.",
)
HELO_INVALID = SymbolDef(
    "HELO_INVALID",
    "HELO is neither a valid domain name nor an address literal.",
    score=3.0,
    remedy="Configure the sending server to greet with its fully qualified host name.",
)
HELO_NOT_FQDN = SymbolDef(
    "HELO_NOT_FQDN",
    "HELO is a name without a dot (not fully qualified), such as 'localhost' or 'PC123'.",
    score=2.0,
    remedy="Configure the sending server to greet with its fully qualified host name.",
)
HELO_LITERAL_MISMATCH = SymbolDef(
    "HELO_LITERAL_MISMATCH",
    "HELO is an address literal that is not the client's own address.",
    score=2.5,
    remedy="Greet with your own address literal, or better your host name.",
)
HELO_LITERAL = SymbolDef(
    "HELO_LITERAL",
    "HELO is the client's own address literal (allowed, but real MTAs use a name).",
    score=0.5,
    remedy="Greet with your fully qualified host name.",
)


class HeloSyntax(Check):
    name = "helo_syntax"
    stage = Stage.HELO
    symbols = (HELO_BARE_IP, HELO_INVALID, HELO_NOT_FQDN, HELO_LITERAL_MISMATCH, HELO_LITERAL)
    Options = BaseOptions
    description = "Syntax of the HELO/EHLO name."

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        helo = ctx.conn.helo
        if helo.startswith("["):
            addr = parse_address_literal(helo)
            if addr is None:
                return [HELO_INVALID.hit(helo)]
            client = ctx.conn.ip
            if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
                client = client.ipv4_mapped
            if addr != client:
                return [HELO_LITERAL_MISMATCH.hit(f"{helo}!={client}")]
            return [HELO_LITERAL.hit(helo)]
        if looks_like_ip(helo):
            return [HELO_BARE_IP.hit(helo)]
        if not is_valid_domain(helo, utf8=True):
            return [HELO_INVALID.hit(helo[:100])]
        if "." not in helo.rstrip("."):
            return [HELO_NOT_FQDN.hit(helo)]
        return []
