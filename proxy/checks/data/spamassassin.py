"""SpamAssassin at DATA: the message goes to ``spamd`` (SPAMC/1.5 ``SYMBOLS``); its score and
the names of the rules that hit join spamgate's verdict.

Symbols: ``SPAMASSASSIN_SPAM{score/threshold:RULE,...}`` when spamd judges the message spam
(score at or over its own threshold; weight 6: tag), else ``SPAMASSASSIN_SCORE{score/threshold:
RULE,...}`` (weight 0: the evidence); ``SPAMASSASSIN_TEMPERROR{why}`` and
``SPAMASSASSIN_SKIPPED{size>limit}`` (spamc's own default cap is 500 KB).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.data.scanning import check_timeout, failure, register_readiness, scanner_options, skipped
from proxy.checks.options import OffByDefault
from proxy.config.fields import opt
from proxy.observability import scanner_metrics
from proxy.scan.base import ScanError
from proxy.scan.spamd import Spamd

SPAMASSASSIN_SPAM = SymbolDef(
    "SPAMASSASSIN_SPAM",
    "SpamAssassin judged the message spam (evidence: score/threshold:rules that hit).",
    score=6.0,
    remedy="See the SpamAssassin rules named in the evidence.",
)
SPAMASSASSIN_SCORE = SymbolDef(
    "SPAMASSASSIN_SCORE",
    "SpamAssassin's score under its threshold (evidence only: score/threshold:rules that hit).",
    score=0.0,
    remedy="Nothing to fix.",
)
SPAMASSASSIN_TEMPERROR = SymbolDef(
    "SPAMASSASSIN_TEMPERROR",
    "spamd gave no verdict: down, too slow, every connection busy, or an error answer.",
    score=0.0,
    remedy="Nothing on the sender's side; the receiving site's scanner failed.",
)
SPAMASSASSIN_SKIPPED = SymbolDef(
    "SPAMASSASSIN_SKIPPED",
    "The message is larger than checks.spamassassin.max_size and was not scanned (size>limit).",
    score=0.0,
    remedy="Nothing to fix.",
)

_O = scanner_options("127.0.0.1:783", "8s", 4, "500K", "continue")


@dataclass(frozen=True, slots=True)
class SpamassassinOptions(OffByDefault):
    address: str = _O["address"]
    timeout: float = _O["timeout"]
    max_connections: int = _O["max_connections"]
    max_size: int = _O["max_size"]
    on_error: str = _O["on_error"]
    ready_check: str = _O["ready_check"]
    user: str = opt("", "spamd's User header (whose preferences apply); empty: spamd's default user.")
    max_rules: int = opt(30, "Rule names listed in the evidence.")


class Spamassassin(Check):
    name = "spamassassin"
    stage = Stage.DATA
    symbols = (SPAMASSASSIN_SPAM, SPAMASSASSIN_SCORE, SPAMASSASSIN_TEMPERROR, SPAMASSASSIN_SKIPPED)
    Options = SpamassassinOptions
    description = "SpamAssassin's spamd (SPAMC/1.5 SYMBOLS): its score and rules scored here."
    io = True

    def __init__(self, options: SpamassassinOptions, services: Services) -> None:
        super().__init__(options, services)
        self.client = Spamd(
            options.address,
            timeout=options.timeout,
            max_connections=options.max_connections,
            user=options.user,
        )

    async def start(self) -> None:
        check_timeout(self.name, self.options.timeout, self.services)
        register_readiness(self.client, self.options, self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        opts: SpamassassinOptions = self.options
        size = len(ctx.message)
        if size > opts.max_size:
            return skipped(self.name, SPAMASSASSIN_SKIPPED, size, opts.max_size)
        try:
            answer = await self.client.check(ctx.message)
        except ScanError as exc:
            return failure(SPAMASSASSIN_TEMPERROR, exc, opts.on_error)
        scanner_metrics.verdict(self.name, "spam" if answer.spam else "ham")
        rules = ",".join(answer.rules[: opts.max_rules])
        if len(answer.rules) > opts.max_rules:
            rules += f",+{len(answer.rules) - opts.max_rules}"
        evidence = f"{answer.score:g}/{answer.threshold:g}:{rules}"
        return [(SPAMASSASSIN_SPAM if answer.spam else SPAMASSASSIN_SCORE).hit(evidence)]
