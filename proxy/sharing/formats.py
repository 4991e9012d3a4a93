"""Feed formats: an rbldnsd ``ip4set`` zone, plain text and JSON; written by the export, read
by the import.

Exported entries carry a reason (the symbol that put the address there, *without* its
evidence: a trap address never leaves the site) and an expiry. The zone answers a code per
reason (:data:`CODES`) and a TXT ``reason until <UTC expiry>``; rbldnsd's ``ip4set`` has no
IPv6, so IPv6 entries are only in the text and JSON feeds.

The parser accepts the JSON written here (``{"entries": [{"ip": ...}]}`` or a list of
strings), and text with one entry a line: an address, a CIDR, an IPv4 range ``a-b`` or an
rbldnsd abbreviated prefix (``10.1`` is 10.1.0.0/16); ``#``/``;`` comments, ``$`` directives
and ``:`` default-value lines are skipped, a value after the address is ignored. Anything else
(rbldnsd ``!`` exclusions included) makes the whole update invalid: the caller keeps the last
good copy.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

CODES = {
    "TRAP_HIT": "127.0.0.2",
    "RCPT_DICTIONARY": "127.0.0.3",
    "REPUTATION_PENALTY": "127.0.0.4",
    "REPUTATION_BAD": "127.0.0.5",
}
OTHER_CODE = "127.0.0.9"


class FeedError(ValueError):
    """A feed that cannot be used as a whole (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    network: str  # "192.0.2.1" or "2001:db8::/64"
    reason: str  # a symbol name: TRAP_HIT, RCPT_DICTIONARY, REPUTATION_PENALTY, REPUTATION_BAD
    until: float  # Unix time of the expiry

    @property
    def code(self) -> str:
        return CODES.get(self.reason, OTHER_CODE)


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def public_reason(reason: str) -> str:
    """The symbol name of a stored reason, without its evidence (``TRAP_HIT{a@b}`` -> ``TRAP_HIT``)."""
    return reason.split("{", 1)[0].strip() or "LISTED"


# -- writing ---------------------------------------------------------------------------------


def render_zone(entries: Iterable[FeedEntry], now: float, ttl: int) -> str:
    lines = [
        f"# spamgate feed, generated {utc(now)}; codes: "
        + ", ".join(f"{c} {r}" for r, c in CODES.items())
        + f", {OTHER_CODE} other",
        f"$TTL {ttl}",
        f":{OTHER_CODE}:Listed by spamgate",
        "127.0.0.2 :127.0.0.2:Test entry (RFC 5782)",  # the probe every DNSBL client sends
    ]
    for e in entries:
        net = ipaddress.ip_network(e.network, strict=False)
        if net.version != 4:
            continue
        text = f"{e.reason} until {utc(e.until)}"
        lines.append(f"{_short(net)} :{e.code}:{text}")
    return "\n".join(lines) + "\n"


def _short(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def render_text(entries: Iterable[FeedEntry], now: float) -> str:
    lines = [f"# spamgate feed, generated {utc(now)}: address reason expiry"]
    for e in entries:
        net = ipaddress.ip_network(e.network, strict=False)
        lines.append(f"{_short(net)} # {e.reason} until {utc(e.until)}")
    return "\n".join(lines) + "\n"


def render_json(entries: Iterable[FeedEntry], now: float) -> str:
    out = {
        "generator": "spamgate",
        "generated": utc(now),
        "entries": [
            {"ip": e.network, "reason": e.reason, "until": int(e.until), "expires": utc(e.until)}
            for e in entries
        ],
    }
    return json.dumps(out, indent=1) + "\n"


# -- reading ---------------------------------------------------------------------------------

Span = tuple[int, int, int, str]  # (version, first, last, label)


def parse_feed(text: str, max_entries: int, now: float | None = None) -> list[Span]:
    """The address spans of a feed in any supported format; FeedError when it is unusable."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return _parse_json(stripped, max_entries, time.time() if now is None else now)
    out: list[Span] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;$:":
            continue
        if line[0] == "!":
            raise FeedError(f"line {no}: exclusions ('!') are not supported")
        token = line.split()[0]
        try:
            out.append(_span(token))
        except ValueError as exc:
            raise FeedError(f"line {no}: {token[:60]!r}: {exc}") from None
        if len(out) > max_entries:
            raise FeedError(f"more than {max_entries} entries")
    return out


def _parse_json(text: str, max_entries: int, now: float) -> list[Span]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FeedError(f"invalid JSON: {exc}") from None
    items = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise FeedError("JSON: expected a list or an object with 'entries'")
    if len(items) > max_entries:
        raise FeedError(f"more than {max_entries} entries")
    out: list[Span] = []
    for i, item in enumerate(items):
        ip = item.get("ip") if isinstance(item, dict) else item
        if not isinstance(ip, str):
            raise FeedError(f"entry {i}: no 'ip' string")
        until = item.get("until") if isinstance(item, dict) else None
        if isinstance(until, int | float) and 0 < until < now:
            continue  # expired at the source
        try:
            out.append(_span(ip))
        except ValueError as exc:
            raise FeedError(f"entry {i}: {ip[:60]!r}: {exc}") from None
    return out


def _span(token: str) -> Span:
    if "-" in token:
        lo_s, hi_s = token.split("-", 1)
        lo, hi = ipaddress.IPv4Address(lo_s), ipaddress.IPv4Address(hi_s)
        if hi < lo:
            raise ValueError("range end before its start")
        return 4, int(lo), int(hi), token
    if ":" not in token and "/" not in token and token.count(".") < 3:
        parts = token.split(".")  # rbldnsd's abbreviated prefix: "10.1" is 10.1.0.0/16
        if not all(p.isdigit() for p in parts):
            raise ValueError("not an address")
        token = ".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}"
    net = ipaddress.ip_network(token, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address), token
