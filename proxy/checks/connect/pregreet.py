"""Pregreet test (postscreen's ``postscreen_greet_action``): early talkers at the greeting.

Off by default. When on, the session calls :func:`before_checks` before the connect-stage
checks: it sends the first line of a multi-line greeting (``220-mx.example.org ESMTP``) and
watches the connection for ``greet_delay`` while the other connect checks (DNS lists, rDNS)
run. The final ``220 mx.example.org ESMTP`` follows once the stage is done. A real SMTP client
waits for the last greeting line; a spam bot that talks first is an early talker: the check
emits ``PREGREET`` (evidence: when and what it sent). What it sent is kept and read as its
first command, so the session goes on normally and the policy decides. If the connect stage
rejects, the reject reply follows the ``220-`` line (as postscreen does).

Clients in ``exempt`` (load balancer health checks, your own networks) and clients that passed
within ``pass_ttl`` (the pass cache) get the normal one-line greeting at once.
``greet_delay`` must be shorter than ``policy.stage_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.connect import pass_cache
from proxy.checks.options import OffByDefault
from proxy.config.fields import ConfigError, opt

PROBE_NOTE = "pregreet_probe"
READ_LIMIT = 32 * 1024

PREGREET = SymbolDef(
    "PREGREET",
    "The client sent data before the end of the multi-line greeting (an early talker, typical of bots).",
    score=6.0,
    remedy="Fix the sending software to wait for the complete 220 greeting (RFC 5321 4.3.1).",
)


@dataclass(frozen=True, slots=True)
class PregreetOptions(OffByDefault):
    greet_delay: float = opt(
        "3s", "How long the greeting stays incomplete while early talkers are watched.", kind="duration"
    )
    pass_ttl: float = opt(
        "1d", "A client that waited skips the test for this long (0: always test).", kind="duration"
    )
    exempt: list[str] = opt(
        [], "Client networks never tested (health checks, load balancers, your own networks).", kind="cidrs"
    )


class Pregreet(Check):
    name = "pregreet"
    stage = Stage.CONNECT
    symbols = (PREGREET,)
    Options = PregreetOptions
    description = "Early talkers: clients sending before the end of a multi-line greeting."
    io = True

    def __init__(self, options: PregreetOptions, services: Services) -> None:
        super().__init__(options, services)
        budget = services.config.policy.stage_timeout
        if options.enabled and options.greet_delay >= budget:
            raise ConfigError(
                "checks.pregreet.greet_delay",
                f"must be shorter than policy.stage_timeout ({budget:g}s), got {options.greet_delay:g}s",
            )
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in options.exempt]

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        probe: asyncio.Future[tuple[float, bytes] | None] | None = ctx.conn.notes.pop(PROBE_NOTE, None)
        if probe is None:
            return []
        result = await probe
        if result is None:
            await pass_cache.remember(self.services, ctx.conn.ip_str, self.name, self.options.pass_ttl)
            return []
        elapsed, data = result
        if not data:  # hung up during the greeting: the session ends on its own
            return []
        return [PREGREET.hit(f"after {elapsed * 1000:.0f}ms: {data[:40]!r}")]


async def before_checks(session: Any, conn: Any) -> None:
    """Session hook: send the ``220-`` teaser and start watching, when the test applies."""
    check = session.gen.pipeline.enabled.get(Pregreet.name)
    if not isinstance(check, Pregreet):
        return
    o: PregreetOptions = check.options
    if any(conn.ip in n for n in check.exempt):
        return
    if await pass_cache.passed(check.services, conn.ip_str, check.name, o.pass_ttl):
        return
    cfg = session.gen.config.server
    session._writer.write(f"220-{cfg.hostname} {cfg.banner}\r\n".encode())
    await session._writer.drain()
    conn.notes[PROBE_NOTE] = asyncio.ensure_future(_watch(session, o.greet_delay))


async def _watch(session: Any, delay: float) -> tuple[float, bytes] | None:
    """None: silent for ``delay``; else (seconds, bytes sent early; b"" on hang-up)."""
    start = time.monotonic()
    try:
        data: bytes = await asyncio.wait_for(session._reader.read(READ_LIMIT), delay)
    except TimeoutError:
        return None
    session._pending += data
    return time.monotonic() - start, data
