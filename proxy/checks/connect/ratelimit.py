"""Rate and concurrency limits, counted in the shared store (fleet-wide with Redis).

``[checks.ratelimit]`` holds every limit; three checks apply them at their stage:
- connect (this module, ``ratelimit``): connections per client IP and per netblock over sliding
  windows, and concurrent connections per client IP across all instances and workers;
- MAIL (``ratelimit_mail``): messages per client IP, netblock and sender domain;
- RCPT (``ratelimit_rcpt``): recipients per client IP, netblock and sender domain.

A limit is ``"count/window"`` (``"100/1m"``, ``"5000/1h"``); an empty string turns it off.
Exceeding a limit only ever tempfails: 421 4.7.0 at connect, 451 4.7.1 at MAIL/RCPT. Attempts
over the limit still count, so a client hammering stays deferred until it slows down.

Concurrency slots live in one expiring set per IP; each slot expires after ``slot_ttl`` unless
refreshed (every ``slot_ttl/3`` while the session lives), so an instance that dies leaks
nothing for longer than ``slot_ttl``. The slot is released when the connection closes.
Clients in ``relay.relay_networks`` and ``exempt_networks`` (default: loopback) are not limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.checks.storeutil import ON_STORE_ERROR_DOC, STORE_SYMBOLS, store_failed
from proxy.config.fields import ConfigError, opt, parse_duration
from proxy.model import Connection
from proxy.state.base import Store, StoreError
from proxy.state.util import Background, netblock

RATELIMIT_CONNECTIONS = SymbolDef(
    "RATELIMIT_CONNECTIONS",
    "The client (IP or netblock, see evidence) opened more connections than allowed in the window.",
    action="tempfail",
    reply="421 4.7.0 Too many connections from your address, slow down and try again later",
    remedy="Open fewer connections: reuse sessions, send several messages per connection.",
)
RATELIMIT_CONCURRENCY = SymbolDef(
    "RATELIMIT_CONCURRENCY",
    "The client IP has more concurrent connections (across all instances) than allowed.",
    action="tempfail",
    reply="421 4.7.0 Too many concurrent connections from your address, try again later",
    remedy="Lower the number of parallel connections to this destination (e.g. Postfix "
    "default_destination_concurrency_limit).",
)
RATELIMIT_MESSAGES = SymbolDef(
    "RATELIMIT_MESSAGES",
    "More messages than allowed in the window from this IP, netblock or sender domain (evidence).",
    action="tempfail",
    reply="451 4.7.1 Message rate limit exceeded, try again later",
    remedy="Send more slowly; queued mail is delivered when the rate falls under the limit.",
)
RATELIMIT_RECIPIENTS = SymbolDef(
    "RATELIMIT_RECIPIENTS",
    "More recipients than allowed in the window from this IP, netblock or sender domain (evidence).",
    action="tempfail",
    reply="451 4.7.1 Recipient rate limit exceeded, try again later",
    remedy="Send more slowly; deferred recipients are retried by your server.",
)


def parse_limit(text: str, path: str = "") -> tuple[int, float] | None:
    """``"100/1m"`` -> (100, 60.0); ``""`` -> None (off). Raises ConfigError naming ``path``."""
    if not text.strip():
        return None
    count, sep, window = text.partition("/")
    if not sep or not count.strip().isdigit():
        raise ConfigError(path, f"expected a limit like '100/1m' (count/window) or '', got {text!r}")
    seconds = parse_duration(window.strip(), path)
    if seconds <= 0:
        raise ConfigError(path, f"the window must be positive in {text!r}")
    return int(count), seconds


def _build_limit(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a limit like '100/1m', got {value!r}")
    parse_limit(value, path)
    return value


def limit_opt(default: str, doc: str) -> Any:
    """A ``count/window`` option, validated when the configuration is loaded."""
    f = opt(default, doc)
    return dataclasses.field(default=default, metadata={**f.metadata, "build": _build_limit})


@dataclass(frozen=True, slots=True)
class RateLimitOptions(BaseOptions):
    connections_per_ip: str = limit_opt("60/1m", "New connections per client IP ('count/window'; '' = off).")
    connections_per_netblock: str = limit_opt("300/1m", "New connections per client netblock.")
    concurrency_per_ip: int = opt(
        30, "Concurrent connections per client IP across the whole fleet; 0 = off.", minimum=0
    )
    messages_per_ip: str = limit_opt("120/1m", "Messages (MAIL commands) per client IP.")
    messages_per_netblock: str = limit_opt("600/1m", "Messages per client netblock.")
    messages_per_sender_domain: str = limit_opt("600/1m", "Messages per envelope sender domain.")
    recipients_per_ip: str = limit_opt("1000/1m", "Recipients (RCPT commands) per client IP.")
    recipients_per_netblock: str = limit_opt("5000/1m", "Recipients per client netblock.")
    recipients_per_sender_domain: str = limit_opt("5000/1m", "Recipients per envelope sender domain.")
    exempt_networks: list[str] = opt(
        ["127.0.0.0/8", "::1/128"],
        "Clients never limited (besides relay.relay_networks); default: this host (local submission).",
        kind="cidrs",
    )
    netblock_v4: int = opt(24, "Prefix length of an IPv4 netblock.", minimum=8)
    netblock_v6: int = opt(64, "Prefix length of an IPv6 netblock.", minimum=16)
    slot_ttl: float = opt(
        "5m", "A concurrency slot expires after this unless refreshed (instance died).", kind="duration"
    )
    on_store_error: str = opt("continue", ON_STORE_ERROR_DOC, choices=("continue", "tempfail"))


class Limits:
    """The parsed limits of ``[checks.ratelimit]`` and the counting shared by the three checks."""

    def __init__(self, o: RateLimitOptions, services: Services) -> None:
        self.o = o
        self.store: Store = services.store
        self.relay_nets = [
            ipaddress.ip_network(n, strict=False)
            for n in [*services.config.relay.relay_networks, *o.exempt_networks]
        ]
        self.limits = {
            f: parse_limit(getattr(o, f), f"checks.ratelimit.{f}")
            for f in (
                "connections_per_ip",
                "connections_per_netblock",
                "messages_per_ip",
                "messages_per_netblock",
                "messages_per_sender_domain",
                "recipients_per_ip",
                "recipients_per_netblock",
                "recipients_per_sender_domain",
            )
        }

    def exempt(self, conn: Connection) -> bool:
        return any(conn.ip in n for n in self.relay_nets)

    async def count(self, kind: str, conn: Connection, sender_domain: str | None = None) -> str:
        """Count one event of ``kind`` for every scope; returns the evidence of the first exceeded."""
        scopes = [
            ("ip", conn.ip_str),
            ("netblock", netblock(conn.ip, self.o.netblock_v4, self.o.netblock_v6)),
        ]
        if sender_domain:
            scopes.append(("sender_domain", sender_domain))
        jobs = []
        for scope, value in scopes:
            limit = self.limits.get(f"{kind}_per_{scope}")
            if limit is not None:
                jobs.append((scope, value, limit))
        if not jobs:
            return ""
        results = await self.store.window_hits(
            [(f"rl|{kind}|{scope}|{value}", window) for scope, value, (_, window) in jobs]
        )
        for (
            scope,
            value,
            (count, window),
        ), seen in zip(jobs, results, strict=True):
            if seen > count:
                return f"{scope}:{value}:{seen:.0f}>{count}/{window:g}s"
        return ""


class RateLimit(Check):
    name = "ratelimit"
    stage = Stage.CONNECT
    symbols = (
        RATELIMIT_CONNECTIONS,
        RATELIMIT_CONCURRENCY,
        RATELIMIT_MESSAGES,
        RATELIMIT_RECIPIENTS,
        *STORE_SYMBOLS,
    )
    Options = RateLimitOptions
    description = "Connection, message and recipient rates and fleet-wide concurrency per client."
    io = True

    def __init__(self, options: RateLimitOptions, services: Services) -> None:
        super().__init__(options, services)
        self.held: dict[str, str] = {}  # slot id -> key name
        self.bg = Background()
        self._refresher: asyncio.Task[None] | None = None
        self._prefix = f"{services.config.server.hostname}:{os.getpid()}:{os.urandom(3).hex()}"

    async def start(self) -> None:
        self.limits = Limits(self.options, self.services)
        if self.options.concurrency_per_ip > 0:
            self.services.on_close.append(self._on_close)
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        # Slots still held belong to sessions in flight (a reload): their on_close releases them.
        await self.bg.drain()

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        conn = ctx.conn
        if self.limits.exempt(conn):
            return []
        out: list[Symbol] = []
        limit = self.options.concurrency_per_ip
        slot, name, ttl = f"{self._prefix}:{conn.id}", f"conc|{conn.ip_str}", self.options.slot_ttl
        results = await asyncio.gather(
            self.limits.count("connections", conn),
            self.limits.store.slot_acquire(name, slot, limit, ttl) if limit > 0 else _none(),
            return_exceptions=True,
        )
        exceeded, acquired = results
        if isinstance(acquired, tuple):
            ok, n = acquired
            if ok:
                self.held[slot] = name
                conn.notes["ratelimit_slot"] = slot
            else:
                out.append(RATELIMIT_CONCURRENCY.hit(f"{conn.ip_str}:{n}>={limit}"))
        if isinstance(exceeded, str) and exceeded:
            out.append(RATELIMIT_CONNECTIONS.hit(exceeded))
        for r in results:
            if isinstance(r, BaseException):
                if not isinstance(r, StoreError):
                    raise r
                return out + store_failed(self.name, self.options.on_store_error)
        return out

    def _on_close(self, conn: Connection) -> None:
        slot = conn.notes.pop("ratelimit_slot", None)
        if slot is None:
            return
        name = self.held.pop(slot, None)
        if name is not None:
            self.bg.spawn(self.limits.store.slot_release(name, slot))

    async def _refresh_loop(self) -> None:
        ttl = self.options.slot_ttl
        while True:
            await asyncio.sleep(max(ttl / 3, 0.2))
            for slot, name in list(self.held.items()):
                try:
                    await self.limits.store.slot_refresh(name, slot, ttl)
                except StoreError:
                    break


async def _none() -> None:
    return None


class EnvelopeRateLimit(Check):
    """Base of ``ratelimit_mail`` and ``ratelimit_rcpt``: count one ``kind`` per client IP,
    netblock and sender domain with the limits of ``[checks.ratelimit]``."""

    kind: ClassVar[str]
    exceeded: ClassVar[SymbolDef]
    symbols = ()
    io = True

    async def start(self) -> None:
        self.limits = Limits(self.services.config.checks["ratelimit"], self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if not self.limits.o.enabled or self.limits.exempt(ctx.conn) or ctx.txn is None:
            return []
        try:
            over = await self.limits.count(self.kind, ctx.conn, sender_domain(ctx.txn.mail_from))
        except StoreError:
            return store_failed(self.name, self.limits.o.on_store_error)
        return [self.exceeded.hit(over)] if over else []


def sender_domain(mail_from: str) -> str | None:
    _local, at, domain = mail_from.rpartition("@")
    return domain.lower().rstrip(".") if at and domain else None
