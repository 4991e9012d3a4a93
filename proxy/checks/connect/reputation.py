"""Sender reputation from our own verdicts, and the penalty box (connect stage).

Every finished transaction feeds the history of its client IP and netblock
(``services.on_transaction``): 'delivered' counts as accepted, 'rejected' as rejected; the
counts decay with ``half_life``. At connect, an IP (else its netblock) with at least
``min_messages`` decayed messages gets ``REPUTATION_BAD`` when its reject ratio is at least
``bad_ratio``, or ``REPUTATION_GOOD`` when it is at most ``good_ratio``.

Penalty box: ``penalty_rejects`` rejected transactions within ``penalty_window`` put the client
IP in the box for ``penalty_time``: every connection gets 421 4.7.0 until it expires.
``penalty_rejects = 0`` turns it off. Clients in ``relay.relay_networks`` and
``exempt_networks`` (default: loopback) are never scored.

Junk and protocol evidence counts as rejected mail too (``evidence_weight`` each): a
transaction where one of ``evidence_symbols`` fired (spamtrap hits, dictionary attacks,
smuggling attempts: bare newlines, NUL), whatever its outcome, and a connection closed for one
of ``evidence_close_reasons`` (non-SMTP input, too many errors or junk commands) or that
pregreeted without a transaction (``services.on_close``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.checks.storeutil import ON_STORE_ERROR_DOC, store_failed
from proxy.config.fields import opt
from proxy.model import Connection
from proxy.state.base import Store, StoreError
from proxy.state.penalty import Penalty
from proxy.state.util import Background, netblock

REPUTATION_BAD = SymbolDef(
    "REPUTATION_BAD",
    "Most recent mail from this client IP or netblock (evidence) was rejected here.",
    score=3.0,
    remedy="Stop the spam from your network; the history decays with time as clean mail is accepted.",
)
REPUTATION_GOOD = SymbolDef(
    "REPUTATION_GOOD",
    "This client IP or netblock (evidence) has a history of accepted mail here.",
    score=-2.0,
    remedy="Nothing to fix.",
)
REPUTATION_PENALTY = SymbolDef(
    "REPUTATION_PENALTY",
    "The client IP sent too many rejected messages recently and is in the penalty box.",
    action="tempfail",
    reply="421 4.7.0 Too many rejected messages from your address, try again later",
    remedy="Stop sending mail that gets rejected (see the rejection's reason); the box expires by itself.",
)


@dataclass(frozen=True, slots=True)
class ReputationOptions(BaseOptions):
    half_life: float = opt("7d", "Half-life of the accepted/rejected counts.", kind="duration")
    history_ttl: float = opt(
        "30d", "A client's history is forgotten after this long without mail.", kind="duration"
    )
    min_messages: float = opt(5.0, "Decayed messages needed before a reputation symbol fires.", minimum=1)
    bad_ratio: float = opt(0.7, "Reject ratio at or above which REPUTATION_BAD fires.")
    good_ratio: float = opt(0.05, "Reject ratio at or below which REPUTATION_GOOD fires.")
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients without reputation or penalty box (besides relay.relay_networks); default: this host.",
        kind="cidrs",
    )
    netblock_v4: int = opt(24, "IPv4 prefix length of the netblock history.", minimum=8)
    netblock_v6: int = opt(64, "IPv6 prefix length of the netblock history.", minimum=16)
    penalty_rejects: int = opt(
        10,
        "Rejected transactions within penalty_window that put the IP in the penalty box; 0 = off.",
        minimum=0,
    )
    penalty_window: float = opt(
        "10m", "Window in which rejects are counted for the penalty box.", kind="duration"
    )
    penalty_time: float = opt("15m", "How long the penalty box tempfails the client.", kind="duration")
    evidence_symbols: list[str] = opt(
        ["TRAP_HIT", "RCPT_DICTIONARY", "BARE_NEWLINE", "NUL_IN_DATA", "PREGREET"],
        "Symbols whose transaction (or connection) counts as rejected, whatever its outcome.",
    )
    evidence_close_reasons: list[str] = opt(
        ["non_smtp", "too_many_errors", "too_many_junk_commands"],
        "Connection close reasons (the connection log line's 'closed') that count as a rejected message.",
    )
    evidence_weight: float = opt(
        1.0, "How many rejected messages one piece of junk or protocol evidence counts as.", minimum=0
    )
    on_store_error: str = opt("continue", ON_STORE_ERROR_DOC, choices=("continue", "tempfail"))


class Reputation(Check):
    name = "reputation"
    stage = Stage.CONNECT
    symbols = (REPUTATION_BAD, REPUTATION_GOOD, REPUTATION_PENALTY)
    Options = ReputationOptions
    description = "Per-IP and per-netblock history of our verdicts, and a penalty box for repeated rejects."
    io = True

    def __init__(self, options: ReputationOptions, services: Services) -> None:
        super().__init__(options, services)
        self.bg = Background()

    async def start(self) -> None:
        self.store: Store = self.services.store
        self.relay_nets = [
            ipaddress.ip_network(n, strict=False)
            for n in [*self.services.config.relay.relay_networks, *self.options.exempt_networks]
        ]
        self.evidence = frozenset(self.options.evidence_symbols)
        self.close_reasons = frozenset(self.options.evidence_close_reasons)
        self.services.on_transaction.append(self._on_transaction)
        self.services.on_close.append(self._on_close)

    async def stop(self) -> None:
        await self.bg.drain()

    def _exempt(self, conn: Connection) -> bool:
        return any(conn.ip in n for n in self.relay_nets)

    def _net(self, conn: Connection) -> str:
        return netblock(conn.ip, self.options.netblock_v4, self.options.netblock_v6)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        o: ReputationOptions = self.options
        conn = ctx.conn
        if self._exempt(conn):
            return []
        try:
            boxed, ip_hist, net_hist = await asyncio.gather(
                self.store.get(f"box|{conn.ip_str}") if o.penalty_rejects > 0 else _none(),
                self.store.decay(f"rep|ip|{conn.ip_str}", 0, 0, o.half_life, o.history_ttl),
                self.store.decay(f"rep|net|{self._net(conn)}", 0, 0, o.half_life, o.history_ttl),
            )
        except StoreError:
            return store_failed(self.name, o.on_store_error)
        out: list[Symbol] = []
        if boxed is not None:
            out.append(REPUTATION_PENALTY.hit(conn.ip_str))
        for scope, (acc, rej) in (("ip", ip_hist), ("net", net_hist)):
            total = acc + rej
            if round(total, 2) < o.min_messages:  # a fresh count decays by a hair
                continue
            ratio = rej / total
            evidence = f"{scope}:a={acc:.1f},r={rej:.1f}"
            if ratio >= o.bad_ratio:
                out.append(REPUTATION_BAD.hit(evidence))
            elif ratio <= o.good_ratio:
                out.append(REPUTATION_GOOD.hit(evidence))
            break  # the IP's own history, when there is enough of it, wins over the netblock's
        return out

    def _evidence(self, hits: Any) -> bool:
        return any(getattr(h, "name", "") in self.evidence for h in hits)

    def _on_transaction(self, conn: Connection, txn: Any, outcome: str) -> None:
        if self._exempt(conn):
            return
        if self.options.evidence_weight > 0 and self._evidence(txn.notes.get("hits", txn.hits)):
            self.bg.spawn(self._record(conn, True, self.options.evidence_weight))
        elif outcome in ("delivered", "rejected"):
            self.bg.spawn(self._record(conn, outcome == "rejected"))

    def _on_close(self, conn: Connection) -> None:
        if self.options.evidence_weight <= 0 or self._exempt(conn):
            return
        junk = conn.notes.get("closed") in self.close_reasons
        if junk or (conn.txn_count == 0 and self._evidence(conn.hits)):
            self.bg.spawn(self._record(conn, True, self.options.evidence_weight))

    async def _record(self, conn: Connection, rejected: bool, weight: float = 1.0) -> None:
        o: ReputationOptions = self.options
        acc, rej = (0.0, weight) if rejected else (weight, 0.0)
        await asyncio.gather(
            self.store.decay(f"rep|ip|{conn.ip_str}", acc, rej, o.half_life, o.history_ttl),
            self.store.decay(f"rep|net|{self._net(conn)}", acc, rej, o.half_life, o.history_ttl),
        )
        if rejected and o.penalty_rejects > 0:
            n = await self.store.window_hit(f"pen|{conn.ip_str}", o.penalty_window)
            if n >= o.penalty_rejects:
                now = time.time()
                entry = Penalty(conn.ip_str, "REPUTATION_PENALTY", now, now + o.penalty_time)
                await self.store.set(f"box|{conn.ip_str}", entry.to_json(), o.penalty_time)


async def _none() -> None:
    return None
