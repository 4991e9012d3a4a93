"""Static allow and block lists by client network (connect stage).

Postfix's ``postscreen_access_list`` in a file of ours: CIDRs in the config and in list files
(one network per line, ``#`` comments), re-read on reload. An allowlisted client gets a large
negative score, so it passes every threshold but relay control, which is never skipped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IP_ALLOWLISTED = SymbolDef(
    "IP_ALLOWLISTED",
    "The client address is on the local allowlist.",
    score=-50.0,
    remedy="Nothing to fix: the site allows this client explicitly.",
)
IP_BLOCKLISTED = SymbolDef(
    "IP_BLOCKLISTED",
    "The client address is on the local blocklist.",
    score=100.0,
    action="reject",
    reply="554 5.7.1 Client address blocked by local policy",
    remedy="Ask the receiving site's postmaster to remove your address from its blocklist.",
)


@dataclass(frozen=True, slots=True)
class StaticListsOptions(BaseOptions):
    allow: list[str] = opt([], "Client networks always accepted (subject to relay control).", kind="cidrs")
    block: list[str] = opt([], "Client networks rejected at connect.", kind="cidrs")
    allow_files: list[str] = opt([], "Files of allowed networks, one per line, '#' comments.")
    block_files: list[str] = opt([], "Files of blocked networks, one per line, '#' comments.")


def read_network_file(path: str) -> list[Network]:
    nets: list[Network] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    return nets


class NetworkSet:
    """Longest-prefix-free membership test: a sorted list per family is enough at these sizes."""

    def __init__(self, nets: list[Network]) -> None:
        self.v4 = [n for n in nets if n.version == 4]
        self.v6 = [n for n in nets if n.version == 6]

    def match(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network | None:
        for n in self.v4 if ip.version == 4 else self.v6:
            if ip in n:
                return n
        return None

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)


class StaticLists(Check):
    name = "static_lists"
    stage = Stage.CONNECT
    symbols = (IP_ALLOWLISTED, IP_BLOCKLISTED)
    Options = StaticListsOptions
    description = "Local allow and block lists of client networks."

    async def start(self) -> None:
        o: StaticListsOptions = self.options
        allow = [ipaddress.ip_network(n, strict=False) for n in o.allow]
        block = [ipaddress.ip_network(n, strict=False) for n in o.block]
        for f in o.allow_files:
            allow += read_network_file(f)
        for f in o.block_files:
            block += read_network_file(f)
        self.allow, self.block = NetworkSet(allow), NetworkSet(block)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        ip = ctx.conn.ip
        if (net := self.allow.match(ip)) is not None:
            return [IP_ALLOWLISTED.hit(str(net))]
        if (net := self.block.match(ip)) is not None:
            return [IP_BLOCKLISTED.hit(str(net))]
        return []
