"""What the DNS-based checks share: the temperror policy and the dynamic-hostname patterns.

- ``on_temperror`` ("continue" | "tempfail"): a DNS failure always yields the check's own
  ``*_TEMPERROR`` symbol (weight 0); with "tempfail" the check also emits ``DNS_TEMPFAIL``,
  whose forced action is tempfail (421 at connect, 451 later): the sender retries.
- Dynamic host names: regular expressions from ``rules/patterns/dynamic-hostnames.txt`` (one a
  line, ``#`` comments, case-insensitive, searched in the name), plus a built-in test for a name
  that embeds the client's address (``1-2-3-4``, ``4.3.2.1``, ``010203004``, ``0a0b0c0d``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
from pathlib import Path
from typing import Any

from proxy.checks.base import Check
from proxy.config.fields import opt
from proxy.config.paths import bundled_rules_dir
from proxy.model import Symbol, SymbolDef

DNS_TEMPFAIL = SymbolDef(
    "DNS_TEMPFAIL",
    "A DNS lookup failed and the check's on_temperror is 'tempfail': the client is asked to retry "
    "(evidence: the check's temperror symbol).",
    score=0.0,
    action="tempfail",
    remedy="Nothing to fix on the sender's side: the receiving site's DNS failed; retry later.",
)

TEMPERROR_CHOICES = ("continue", "tempfail")


def on_temperror_opt() -> Any:
    return opt(
        "continue",
        "On a DNS failure: 'continue' (the weight-0 *_TEMPERROR symbol only) or 'tempfail' "
        "(also DNS_TEMPFAIL: 421/451, the sender retries).",
        choices=TEMPERROR_CHOICES,
    )


def temperror(symbol: SymbolDef, evidence: str, on_temperror: str) -> list[Symbol]:
    hits = [symbol.hit(evidence)]
    if on_temperror == "tempfail":
        hits.append(DNS_TEMPFAIL.hit(symbol.name))
    return hits


def default_patterns_file() -> Path:
    return bundled_rules_dir() / "patterns" / "dynamic-hostnames.txt"


@functools.lru_cache(maxsize=8)
def load_patterns(path: str) -> tuple[re.Pattern[str], ...]:
    """Compile a pattern file; a bad line raises ValueError with file and line."""
    file = Path(path) if path else default_patterns_file()
    out: list[re.Pattern[str]] = []
    for lineno, line in enumerate(file.read_text().splitlines(), 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            out.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"{file}:{lineno}: bad pattern {text!r}: {exc}") from None
    return tuple(out)


def embeds_address(name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when an IPv4 client's address appears in its host name (either byte order)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return False
        ip = ip.ipv4_mapped
    o = [str(b) for b in ip.packed]
    lower = name.lower()
    for seq in (o, o[::-1]):
        if re.search(r"(?<![0-9])" + r"[-._x]?".join(seq) + r"(?![0-9])", lower):
            return True
        if "".join(f"{int(x):03d}" for x in seq) in lower:
            return True
        if "".join(f"{int(x):02x}" for x in seq) in lower:
            return True
    return False


def dynamic_match(
    name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, patterns: tuple[re.Pattern[str], ...]
) -> str:
    """What makes ``name`` look dynamic ('' when nothing): 'ip-in-name' or the matched text."""
    if embeds_address(name, ip):
        return "ip-in-name"
    for p in patterns:
        m = p.search(name)
        if m:
            return m.group(0).strip(".-") or p.pattern
    return ""


class ListHealthCheck(Check):
    """A check over DNS lists with a health probe: ``start`` runs :meth:`probe_lists` at once
    and every ``health_interval`` (when ``health_check`` is on and there are lists), ``stop``
    ends it. Subclasses set ``self.lists`` and say how their lists are probed."""

    lists: list[Any]
    _health: asyncio.Task[None] | None = None

    async def probe_lists(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def start(self) -> None:
        if self.lists and self.options.health_check and self.services.resolver is not None:
            self._health = asyncio.ensure_future(self._health_loop())

    async def stop(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None

    async def _health_loop(self) -> None:
        while True:
            await self.probe_lists()
            await asyncio.sleep(self.options.health_interval)
