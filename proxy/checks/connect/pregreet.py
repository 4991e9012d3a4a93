"""Pregreet test (postscreen's ``postscreen_greet_action``): early talkers at the greeting.

Off by default. When on, ``before_greeting`` (the session's connect-stage hook, see
:class:`proxy.checks.base.GreetingHook`) sends the first line of a multi-line greeting
(``220-mx.example.org ESMTP``) and watches the connection for ``greet_delay`` while the other
connect checks (DNS lists, rDNS) run. The final ``220 mx.example.org ESMTP`` follows once the
stage is done. A real SMTP client
waits for the last greeting line; a spam bot that talks first is an early talker: the check
emits ``PREGREET`` (evidence: when and what it sent). What it sent is kept and read as its
first command, so the session goes on normally and the policy decides. A reply may not
change its code between lines (RFC 5321 4.2.1), so when the connect stage rejects after a
teaser the greeting is completed with ``220`` and the rejection answers the client's
commands instead (a tempfail: 421 and close; a reject: the 554 to every command but QUIT).

Clients in ``exempt`` (load balancer health checks, your own networks) and clients that passed
within ``pass_ttl`` (the pass cache) get the normal one-line greeting at once.
``greet_delay`` must be shorter than ``policy.stage_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, GreetingHook, Services, Stage, Symbol, SymbolDef
from proxy.checks.connect import pass_cache
from proxy.checks.options import OffByDefault
from proxy.config.fields import ConfigError, opt
from proxy.model import Connection

PROBE_NOTE = "pregreet_probe"

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

    async def before_greeting(self, conn: Connection, hook: GreetingHook) -> None:
        """Send the ``220-`` teaser and start watching, when the test applies to this client."""
        o: PregreetOptions = self.options
        if any(conn.ip in n for n in self.exempt):
            return
        if await pass_cache.passed(self.services, conn.ip_str, self.name, o.pass_ttl):
            return
        await hook.send_teaser()
        conn.notes[PROBE_NOTE] = hook.watch_early_input(o.greet_delay)

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
