"""Recipient rate limits at RCPT (``ratelimit_rcpt``): per client IP, netblock and sender domain.

The limits live in ``[checks.ratelimit]`` (see :mod:`proxy.checks.connect.ratelimit`); this
section only enables or observes the RCPT-stage part. Exceeding: 451 4.7.1 on that RCPT.
``[checks.ratelimit] enabled = false`` turns this part off too.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Stage
from proxy.checks.connect.ratelimit import RATELIMIT_RECIPIENTS, EnvelopeRateLimit
from proxy.checks.options import BaseOptions


@dataclass(frozen=True, slots=True)
class RateLimitRcptOptions(BaseOptions):
    pass


class RateLimitRcpt(EnvelopeRateLimit):
    name = "ratelimit_rcpt"
    stage = Stage.RCPT
    Options = RateLimitRcptOptions
    description = "Recipients per client IP, netblock and sender domain (limits in [checks.ratelimit])."
    kind = "recipients"
    exceeded = RATELIMIT_RECIPIENTS
