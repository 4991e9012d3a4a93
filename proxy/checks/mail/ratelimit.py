"""Message rate limits at MAIL (``ratelimit_mail``): per client IP, netblock and sender domain.

The limits live in ``[checks.ratelimit]`` (see :mod:`proxy.checks.connect.ratelimit`); this
section only enables or observes the MAIL-stage part. Exceeding: 451 4.7.1 on MAIL.
``[checks.ratelimit] enabled = false`` turns this part off too.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Stage
from proxy.checks.connect.ratelimit import RATELIMIT_MESSAGES, EnvelopeRateLimit
from proxy.checks.options import BaseOptions


@dataclass(frozen=True, slots=True)
class RateLimitMailOptions(BaseOptions):
    pass


class RateLimitMail(EnvelopeRateLimit):
    name = "ratelimit_mail"
    stage = Stage.MAIL
    Options = RateLimitMailOptions
    description = "Messages per client IP, netblock and sender domain (limits in [checks.ratelimit])."
    kind = "messages"
    exceeded = RATELIMIT_MESSAGES
