"""rspamd at DATA: the message and its real envelope go to rspamd's ``/checkv2``; its action
and symbols join spamgate's verdict, so one log line and one ref explain both.

Symbols: ``RSPAMD_SYMBOLS{NAME:score,...}`` (weight 0: rspamd's symbols with their rspamd
scores, the largest first, at most ``max_symbols``), one symbol for rspamd's action through
``actions`` (by default ``reject`` -> ``RSPAMD_REJECT``, ``soft reject`` ->
``RSPAMD_SOFT_REJECT``, ``rewrite subject``/``add header`` -> ``RSPAMD_ADD_HEADER``,
``greylist`` -> ``RSPAMD_GREYLIST``; evidence ``score/required``), ``RSPAMD_TEMPERROR{why}``
and ``RSPAMD_SKIPPED{size>limit}``. With ``add_headers`` the headers rspamd asks for (its
``milter.add_headers``, e.g. ``X-Spamd-Result``) are added to the relayed message; with
``remove_headers`` the client's copies of the headers rspamd asks to remove (its
``milter.remove_headers``: by default its own headers, so a forged ``X-Spamd-Result`` does not
reach the mailbox beside the real one) are removed first.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.data.scanning import check_timeout, failure, register_readiness, scanner_options, skipped
from proxy.checks.options import OffByDefault
from proxy.config.fields import ConfigError, opt
from proxy.observability import scanner_metrics
from proxy.scan.base import ScanError
from proxy.scan.rspamd import Envelope, Rspamd, RspamdAnswer

RSPAMD_SYMBOLS = SymbolDef(
    "RSPAMD_SYMBOLS",
    "What rspamd found: its symbols with rspamd's own scores (evidence only; its action is scored "
    "through the RSPAMD_<action> symbols).",
    score=0.0,
    remedy="See the rspamd symbols named in the evidence.",
)
RSPAMD_REJECT = SymbolDef(
    "RSPAMD_REJECT",
    "rspamd's action is 'reject' (evidence: rspamd's score/required score).",
    score=0.0,
    action="reject",
    reply="550 5.7.1 Message rejected as spam",
    remedy="See the rspamd symbols in the log line: usually spam content or a bad reputation.",
)
RSPAMD_SOFT_REJECT = SymbolDef(
    "RSPAMD_SOFT_REJECT",
    "rspamd's action is 'soft reject' (a rate limit or a temporary condition).",
    score=0.0,
    action="tempfail",
    reply="451 4.7.1 Message deferred, try again later",
    remedy="Retry later.",
)
RSPAMD_ADD_HEADER = SymbolDef(
    "RSPAMD_ADD_HEADER",
    "rspamd's action is 'add header' or 'rewrite subject': probable spam, delivered tagged.",
    score=6.0,
    remedy="See the rspamd symbols in the log line.",
)
RSPAMD_GREYLIST = SymbolDef(
    "RSPAMD_GREYLIST",
    "rspamd's action is 'greylist': a doubtful message (weighted, not deferred: spamgate greylists at RCPT).",
    score=2.0,
    remedy="See the rspamd symbols in the log line.",
)
RSPAMD_TEMPERROR = SymbolDef(
    "RSPAMD_TEMPERROR",
    "rspamd gave no verdict: down, too slow, every connection busy, or an error answer.",
    score=0.0,
    remedy="Nothing on the sender's side; the receiving site's scanner failed.",
)
RSPAMD_SKIPPED = SymbolDef(
    "RSPAMD_SKIPPED",
    "The message is larger than checks.rspamd.max_size and was not scanned (evidence: size>limit).",
    score=0.0,
    remedy="Nothing to fix.",
)
ACTION_SYMBOLS = {s.name: s for s in (RSPAMD_REJECT, RSPAMD_SOFT_REJECT, RSPAMD_ADD_HEADER, RSPAMD_GREYLIST)}

_O = scanner_options("127.0.0.1:11333", "8s", 8, "20M", "continue")


@dataclass(frozen=True, slots=True)
class RspamdOptions(OffByDefault):
    address: str = _O["address"]
    timeout: float = _O["timeout"]
    max_connections: int = _O["max_connections"]
    max_size: int = _O["max_size"]
    on_error: str = _O["on_error"]
    ready_check: str = _O["ready_check"]
    actions: dict[str, str] = opt(
        {
            "reject": "RSPAMD_REJECT",
            "soft_reject": "RSPAMD_SOFT_REJECT",
            "rewrite_subject": "RSPAMD_ADD_HEADER",
            "add_header": "RSPAMD_ADD_HEADER",
            "greylist": "RSPAMD_GREYLIST",
        },
        "rspamd's action (spaces written as '_') -> spamgate symbol: one of RSPAMD_REJECT, "
        "RSPAMD_SOFT_REJECT, RSPAMD_ADD_HEADER, RSPAMD_GREYLIST; '' or absent: none.",
    )
    add_headers: bool = opt(False, "Add the headers rspamd asks for (X-Spamd-Result...) to the message.")
    remove_headers: bool = opt(
        False,
        "Remove from the message the headers rspamd asks to remove (its milter.remove_headers: "
        "by default the client's copies of the headers it adds, e.g. a forged X-Spamd-Result).",
    )
    max_symbols: int = opt(30, "rspamd symbols listed in RSPAMD_SYMBOLS' evidence (largest scores first).")


def _fmt(score: float) -> str:
    return f"{score:.2f}".rstrip("0").rstrip(".") or "0"


def symbol_list(answer: RspamdAnswer, limit: int) -> str:
    ordered = sorted(answer.symbols, key=lambda s: (-abs(s.score), s.name))
    shown = [f"{s.name}:{_fmt(s.score)}" for s in ordered[:limit]]
    if len(ordered) > limit:
        shown.append(f"+{len(ordered) - limit}")
    return ",".join(shown)


class RspamdCheck(Check):
    name = "rspamd"
    stage = Stage.DATA
    symbols = (RSPAMD_SYMBOLS, *ACTION_SYMBOLS.values(), RSPAMD_TEMPERROR, RSPAMD_SKIPPED)
    Options = RspamdOptions
    description = "rspamd over HTTP (/checkv2 with the real envelope): its action and symbols scored here."
    io = True

    def __init__(self, options: RspamdOptions, services: Services) -> None:
        super().__init__(options, services)
        self.client = Rspamd(
            options.address, timeout=options.timeout, max_connections=options.max_connections
        )

    async def start(self) -> None:
        check_timeout(self.name, self.options.timeout, self.services)
        for action, sym in self.options.actions.items():
            if sym and sym not in ACTION_SYMBOLS:
                raise ConfigError(
                    f"checks.rspamd.actions.{action}",
                    f"must be one of {', '.join(ACTION_SYMBOLS)}, got {sym!r}",
                )
        register_readiness(self.client, self.options, self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        opts: RspamdOptions = self.options
        txn = ctx.txn
        assert txn is not None
        size = len(ctx.message)
        if size > opts.max_size:
            return skipped(self.name, RSPAMD_SKIPPED, size, opts.max_size)
        conn = ctx.conn
        envelope = Envelope(
            ip=conn.ip_str,
            helo=conn.helo,
            mail_from=txn.mail_from,
            rcpts=tuple(txn.accepted),
            hostname=conn.reverse_name,
            queue_id=txn.ref,
        )
        try:
            answer = await self.client.check(ctx.message, envelope)
        except ScanError as exc:
            return failure(RSPAMD_TEMPERROR, exc, opts.on_error)
        scanner_metrics.verdict(self.name, answer.action)
        out = [RSPAMD_SYMBOLS.hit(symbol_list(answer, opts.max_symbols))]
        mapped = ACTION_SYMBOLS.get(opts.actions.get(answer.action.replace(" ", "_"), ""))
        if mapped is not None:
            out.append(mapped.hit(f"{_fmt(answer.score)}/{_fmt(answer.required)}"))
        if opts.add_headers and answer.add_headers:
            txn.notes.setdefault("add_headers", []).extend(answer.add_headers)
        if opts.remove_headers and answer.remove_headers:
            txn.notes.setdefault("remove_headers", []).extend(answer.remove_headers)
        return out
