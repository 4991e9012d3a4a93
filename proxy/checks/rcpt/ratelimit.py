"""Recipient rate limits at RCPT (``ratelimit_rcpt``): per client IP, netblock and sender domain.

The limits live in ``[checks.ratelimit]`` (see :mod:`proxy.checks.connect.ratelimit`); this
section only enables or observes the RCPT-stage part. Exceeding: 451 4.7.1 on that RCPT.
``[checks.ratelimit] enabled = false`` turns this part off too.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol
from proxy.checks.connect.ratelimit import RATELIMIT_RECIPIENTS, Limits
from proxy.checks.mail.ratelimit import sender_domain
from proxy.checks.options import BaseOptions
from proxy.state.base import StoreError
from proxy.state.symbols import store_failed


@dataclass(frozen=True, slots=True)
class RateLimitRcptOptions(BaseOptions):
    pass


class RateLimitRcpt(Check):
    name = "ratelimit_rcpt"
    stage = Stage.RCPT
    symbols = ()
    Options = RateLimitRcptOptions
    description = "Recipients per client IP, netblock and sender domain (limits in [checks.ratelimit])."
    io = True

    async def start(self) -> None:
        self.limits = Limits(self.services.config.checks["ratelimit"], self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if not self.limits.o.enabled or self.limits.exempt(ctx.conn) or ctx.txn is None:
            return []
        try:
            exceeded = await self.limits.count("recipients", ctx.conn, sender_domain(ctx.txn.mail_from))
        except StoreError:
            return store_failed(self.name, self.limits.o.on_store_error)
        return [RATELIMIT_RECIPIENTS.hit(exceeded)] if exceeded else []
