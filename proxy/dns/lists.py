"""DNS lists (DNSBL, DNSWL, RHSBL): item syntax, query names, answer filtering and zone health.

Item syntax (Postfix ``postscreen_dnsbl_sites``)::

    zone[=pattern][*weight]
    zen.spamhaus.org*3                          any 127.x.y.z answer, weight 3
    zen.spamhaus.org=127.0.0.[2..11]*3          only these codes
    b.barracudacentral.org=127.0.0.2*2
    list.dnswl.org=127.0.[0..255].[1;2;3]*-5    negative weight: an allow list

A pattern has four octets, each a number, ``*`` or ``[a..b;c;d..e]``. The default weight is 1.

Contract of :class:`DnsList`:
- ``query_name(key)``: the reversed IPv4 address (``4.3.2.1.zone``), the IPv6 nibbles
  (``b.a.9.8...zone``), or a domain (``example.com.zone``) for RHSBLs.
- ``lookup(resolver, key)`` returns a :class:`ListAnswer`: ``listed`` codes that match the
  pattern, ``failed`` on a DNS temperror, ``unusable`` when the list answered with an error code
  (127.255.255.x: refused / over quota, or anything outside 127/8); the caller then disables it.
- Health: ``probe(resolver)`` checks that 127.0.0.2 is listed and 127.0.0.1 is not (``test.``
  / ``invalid`` names for RHSBLs are not probed: ``probe_ip=False``). ``healthy`` goes False with
  a warning log and ``metrics.list_health(zone, False)``; a later good probe re-enables it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from proxy.observability import metrics

if TYPE_CHECKING:
    from proxy.dns.resolver import Resolver

log = structlog.get_logger("spamgate.dns")

_WEIGHT_RE = re.compile(r"\*\s*(-?\d+(?:\.\d+)?)\s*$")
_ZONE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")
_ERROR_NET = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _octet_set(text: str, item: str) -> frozenset[int] | None:
    """``None`` means any value."""
    if text == "*":
        return None
    if text.startswith("[") and text.endswith("]"):
        values: set[int] = set()
        for part in text[1:-1].split(";"):
            lo, sep, hi = part.partition("..")
            try:
                a, b = int(lo), int(hi if sep else lo)
            except ValueError:
                raise ValueError(f"bad octet range {part!r} in {item!r}") from None
            if not 0 <= a <= b <= 255:
                raise ValueError(f"bad octet range {part!r} in {item!r}")
            values.update(range(a, b + 1))
        return frozenset(values)
    if text.isdigit() and int(text) <= 255:
        return frozenset({int(text)})
    raise ValueError(f"bad octet {text!r} in {item!r}")


@dataclass(frozen=True, slots=True)
class ListSpec:
    zone: str
    weight: float = 1.0
    pattern: tuple[frozenset[int] | None, ...] | None = None
    text: str = ""

    def matches(self, code: str) -> bool:
        if self.pattern is None:
            return True
        parts = code.split(".")
        if len(parts) != 4:
            return False
        for want, got in zip(self.pattern, parts, strict=True):
            if want is not None and (not got.isdigit() or int(got) not in want):
                return False
        return True


def parse_item(item: str) -> ListSpec:
    """Parse one ``zone[=pattern][*weight]`` item; ValueError names the item."""
    text = item.strip()
    weight = 1.0
    m = _WEIGHT_RE.search(text)
    if m:
        weight = float(m.group(1))
        text = text[: m.start()].strip()
    zone, _, pat = text.partition("=")
    zone, pat = zone.strip().rstrip(".").lower(), pat.strip()
    if not _ZONE_RE.match(zone):
        raise ValueError(f"expected 'zone[=127.0.0.[2..11]][*weight]' with a domain zone, got {item!r}")
    pattern = None
    if pat:
        octets = re.findall(r"\[[^\]]*\]|[^.]+", pat)
        if len(octets) != 4:
            raise ValueError(f"pattern {pat!r} in {item!r} must have four octets")
        pattern = tuple(_octet_set(o, item) for o in octets)
    return ListSpec(zone, weight, pattern, item.strip())


def reversed_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``1.2.3.4`` -> ``4.3.2.1``; IPv6 -> 32 dot-separated nibbles, least significant first."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    rp = ip.reverse_pointer
    return rp.rsplit(".in-addr.arpa", 1)[0] if ip.version == 4 else rp.rsplit(".ip6.arpa", 1)[0]


def _shown(key: str) -> str:
    return {"2.0.0.127": "127.0.0.2", "1.0.0.127": "127.0.0.1"}.get(key, key)


@dataclass(slots=True)
class ListAnswer:
    listed: list[str] = field(default_factory=list)
    failed: bool = False
    unusable: str = ""  # why the list cannot be trusted (an error code it answered)


@dataclass(slots=True)
class DnsList:
    spec: ListSpec
    kind: str = "dnsbl"  # for logs: dnsbl | rhsbl
    healthy: bool = True
    reason: str = ""

    @property
    def zone(self) -> str:
        return self.spec.zone

    def query_name(self, key: str) -> str:
        return f"{key}.{self.spec.zone}"

    async def lookup(self, resolver: Resolver, key: str) -> ListAnswer:
        res = await resolver.lookup(self.query_name(key), "A")
        if res.failed:
            return ListAnswer(failed=True)
        if not res.ok:
            return ListAnswer()
        out = ListAnswer()
        for code in res.records:
            try:
                addr = ipaddress.ip_address(code)
            except ValueError:
                out.unusable = f"answer {code!r}"
                continue
            if addr in _ERROR_NET or addr not in _LOOPBACK:
                out.unusable = f"answer {code}"
                continue
            if self.spec.matches(str(code)):
                out.listed.append(str(code))
        return out

    def disable(self, reason: str) -> None:
        if self.healthy:
            log.warning("dns_list_disabled", zone=self.zone, kind=self.kind, reason=reason)
        self.healthy, self.reason = False, reason
        metrics.list_health(self.zone, False)

    def enable(self) -> None:
        if not self.healthy:
            log.info("dns_list_enabled", zone=self.zone, kind=self.kind)
        self.healthy, self.reason = True, ""
        metrics.list_health(self.zone, True)

    async def probe(
        self, resolver: Resolver, listed_key: str = "2.0.0.127", clean_key: str = "1.0.0.127"
    ) -> bool:
        """127.0.0.2 must be listed and 127.0.0.1 not (domain lists: RFC 5782's ``test`` and
        ``invalid``, or the keys given; an empty ``listed_key`` skips that half); updates
        ``healthy``. A temperror of the probe itself leaves the state unchanged (the lookups
        report their own temperrors)."""
        listed = await self.lookup(resolver, listed_key) if listed_key else ListAnswer(listed=["(skipped)"])
        clean = await self.lookup(resolver, clean_key)
        if listed.failed or clean.failed:
            return self.healthy
        if listed.unusable or clean.unusable:
            self.disable(f"probe got {listed.unusable or clean.unusable}")
        elif not listed.listed:
            self.disable(f"probe: test entry {_shown(listed_key)} is not listed")
        elif clean.listed:
            self.disable(f"probe: {_shown(clean_key)} is listed (the list answers everything)")
        else:
            self.enable()
        return self.healthy
