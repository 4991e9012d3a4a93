"""What the fleet knows, as feed entries: read from the shared store.

- the penalty box (``pbox|<ip>``: spamtrap hits, dictionary attacks), with its expiry;
- the reputation check's own penalty box (``box|<ip>``: too many rejects), with its expiry;
- with ``include_reputation``, IPs whose decayed history is bad (the reputation check's
  ``min_messages`` and ``bad_ratio``): listed until two export intervals from now, so a peer
  drops them when the site stops re-exporting them.

Reasons are symbol names without evidence (:func:`proxy.sharing.formats.public_reason`).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from proxy.sharing.formats import FeedEntry, public_reason
from proxy.state import penalty
from proxy.state.base import Store
from proxy.state.penalty import Penalty

REP_PREFIX = "rep|ip|"


async def collect(store: Store, config: Any, max_entries: int) -> list[FeedEntry]:
    """``config``: the whole :class:`proxy.config.schema.Config` (sharing and reputation)."""
    now = time.time()
    found: dict[str, FeedEntry] = {}
    for prefix, default_reason in ((penalty.PREFIX, "PENALTY_BOX"), ("box|", "REPUTATION_PENALTY")):
        for name, value in await store.scan(prefix, max_entries):
            ip = name[len(prefix) :]
            if not _valid(ip):
                continue
            p = Penalty.parse(ip, value)
            until = p.until or now + 3600  # an old entry without its expiry
            if until <= now:
                continue
            reason = public_reason(p.reason) if p.until else default_reason
            old = found.get(ip)
            if old is None or old.until < until:
                found[ip] = FeedEntry(ip, reason, until)
    if config.sharing.include_reputation and "reputation" in config.checks:
        rep = config.checks["reputation"]
        until = now + 2 * config.sharing.zone_interval
        for name, _ in await store.scan(REP_PREFIX, max_entries):
            ip = name[len(REP_PREFIX) :]
            if ip in found or not _valid(ip):
                continue
            acc, rej = await store.decay(name, 0, 0, rep.half_life, rep.history_ttl)
            total = acc + rej
            if round(total, 2) >= rep.min_messages and rej / total >= rep.bad_ratio:
                found[ip] = FeedEntry(ip, "REPUTATION_BAD", until)
    entries = sorted(found.values(), key=lambda e: _sort_key(e.network))
    return entries[:max_entries]


def _valid(ip: str) -> bool:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def _sort_key(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    return a.version, int(a)
