"""Message rate limits at MAIL (``ratelimit_mail``): per client IP, netblock and sender domain.

The limits live in ``[checks.ratelimit]`` (see :mod:`proxy.checks.connect.ratelimit`); this
section only enables or observes the MAIL-stage part. Exceeding: 451 4.7.1 on MAIL.
``[checks.ratelimit] enabled = false`` turns this part off too.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol
from proxy.checks.connect.ratelimit import RATELIMIT_MESSAGES, Limits
from proxy.checks.options import BaseOptions
from proxy.state.base import StoreError
from proxy.state.symbols import store_failed


@dataclass(frozen=True, slots=True)
class RateLimitMailOptions(BaseOptions):
    pass


def sender_domain(mail_from: str) -> str | None:
    _local, at, domain = mail_from.rpartition("@")
    return domain.lower().rstrip(".") if at and domain else None


class RateLimitMail(Check):
    name = "ratelimit_mail"
    stage = Stage.MAIL
    symbols = ()
    Options = RateLimitMailOptions
    description = "Messages per client IP, netblock and sender domain (limits in [checks.ratelimit])."
    io = True

    async def start(self) -> None:
        self.limits = Limits(self.services.config.checks["ratelimit"], self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if not self.limits.o.enabled or self.limits.exempt(ctx.conn) or ctx.txn is None:
            return []
        try:
            exceeded = await self.limits.count("messages", ctx.conn, sender_domain(ctx.txn.mail_from))
        except StoreError:
            return store_failed(self.name, self.limits.o.on_store_error)
        return [RATELIMIT_MESSAGES.hit(exceeded)] if exceeded else []
