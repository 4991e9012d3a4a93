"""Greylisting (RFC 6647) at RCPT, for doubtful mail only, with automatic allowlisting.

The triplet is (client netblock, envelope sender, recipient): a first attempt gets
``451 4.7.1`` with the time to wait; a retry before ``delay`` gets the same; a retry within
``retry_window`` after the delay is accepted and the triplet is remembered for ``lifetime``.
Keying on the netblock (IPv4 /24, IPv6 /64) lets senders with pools of outbound hosts pass.

After ``allowlist_after`` passed triplets, the client netblock (and the sender's SPF-authorised
domain, when SPF passed) is allowlisted for ``lifetime``: its later mail is never delayed.

Skipped: clients in ``relay.relay_networks``; sessions where a symbol of ``skip_symbols`` fired
(allowlist, DNSWL, good reputation; ``PREFIX*`` matches a prefix); mail whose score so far is
below ``min_score`` (clean-looking mail is not delayed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.checks.storeutil import ON_STORE_ERROR_DOC, store_failed
from proxy.config.fields import opt
from proxy.state.base import Store, StoreError
from proxy.state.util import netblock

GREYLISTED = SymbolDef(
    "GREYLISTED",
    "First delivery attempt of this (netblock, sender, recipient) triplet, or a retry too early; "
    "evidence: seconds to wait.",
    score=0.0,
    action="tempfail",
    reply="451 4.7.1 Greylisted, please try again in {evidence} seconds",
    remedy="Nothing: a standard mail server retries and is accepted after the delay.",
)
GREYLIST_PASS = SymbolDef(
    "GREYLIST_PASS",
    "The triplet passed greylisting (evidence: 'retried', 'known', or the allowlisted netblock/domain).",
    score=0.0,
    remedy="Nothing to fix.",
)


@dataclass(frozen=True, slots=True)
class GreylistOptions(BaseOptions):
    delay: float = opt("5m", "How long a new triplet is deferred.", kind="duration")
    retry_window: float = opt(
        "24h", "How long after the delay a retry is still accepted; later it starts anew.", kind="duration"
    )
    lifetime: float = opt(
        "36d",
        "How long a passed triplet, and an auto-allowlisted netblock or domain, is kept.",
        kind="duration",
    )
    allowlist_after: int = opt(
        3,
        "Passed triplets after which the netblock (and SPF-pass domain) is allowlisted; 0 = never.",
        minimum=0,
    )
    min_score: float = opt(
        3.0, "Greylist only mail whose score so far is at least this; 0 greylists every message."
    )
    netblock_v4: int = opt(24, "IPv4 prefix length of the client part of the triplet.", minimum=8)
    netblock_v6: int = opt(64, "IPv6 prefix length of the client part of the triplet.", minimum=16)
    skip_symbols: list[str] = opt(
        ["IP_ALLOWLISTED", "DNSWL_*", "REPUTATION_GOOD"],
        "Never greylist a session where one of these symbols fired ('NAME*' matches a prefix).",
    )
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients never greylisted (besides relay.relay_networks); default: this host (local submission).",
        kind="cidrs",
    )
    on_store_error: str = opt(
        "continue",
        ON_STORE_ERROR_DOC + " 'continue' accepts without greylisting.",
        choices=("continue", "tempfail"),
    )


class Greylist(Check):
    name = "greylist"
    stage = Stage.RCPT
    symbols = (GREYLISTED, GREYLIST_PASS)
    Options = GreylistOptions
    description = "RFC 6647 greylisting of doubtful mail, with auto-allowlisting of good senders."
    io = True

    async def start(self) -> None:
        self.store: Store = self.services.store
        self.relay_nets = [
            ipaddress.ip_network(n, strict=False)
            for n in [*self.services.config.relay.relay_networks, *self.options.exempt_networks]
        ]
        o: GreylistOptions = self.options
        self.skip_exact = frozenset(s for s in o.skip_symbols if not s.endswith("*"))
        self.skip_prefix = tuple(s[:-1] for s in o.skip_symbols if s.endswith("*"))

    def _skipped(self, ctx: CheckContext) -> bool:
        if any(ctx.conn.ip in n for n in self.relay_nets):
            return True
        if self.skip_exact & ctx.fired:
            return True
        return any(name.startswith(self.skip_prefix) for name in ctx.fired) if self.skip_prefix else False

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        o: GreylistOptions = self.options
        if ctx.txn is None or self._skipped(ctx) or ctx.score < o.min_score:
            return []
        net = netblock(ctx.conn.ip, o.netblock_v4, o.netblock_v6)
        spf = ctx.txn.notes.get("spf")
        spf_domain = (
            str(spf[1]).lower() if isinstance(spf, tuple) and len(spf) > 1 and spf[0] == "pass" else ""
        )
        try:
            lookups = [self.store.get(f"glwl|net|{net}")]
            if spf_domain:
                lookups.append(self.store.get(f"glwl|dom|{spf_domain}"))
            listed = await asyncio.gather(*lookups)
            for what, hit in zip((net, spf_domain), listed, strict=False):
                if hit is not None:
                    return [GREYLIST_PASS.hit(f"allowlisted:{what}")]
            triplet = f"gl|{net}|{ctx.txn.mail_from.lower()}|{ctx.rcpt.lower()}"
            state, wait = await self.store.greylist(triplet, o.delay, o.retry_window, o.lifetime)
            if state in ("new", "early"):
                return [GREYLISTED.hit(str(max(1, math.ceil(wait))))]
            if state == "pass" and o.allowlist_after > 0:
                await self._count_pass(f"net|{net}")
                if spf_domain:
                    await self._count_pass(f"dom|{spf_domain}")
        except StoreError:
            return store_failed(self.name, o.on_store_error)
        return [GREYLIST_PASS.hit("retried" if state == "pass" else "known")]

    async def _count_pass(self, what: str) -> None:
        o: GreylistOptions = self.options
        if await self.store.incr(f"glpass|{what}", o.lifetime) >= o.allowlist_after:
            await self.store.set(f"glwl|{what}", "1", o.lifetime)
