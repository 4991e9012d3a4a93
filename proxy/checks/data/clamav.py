"""ClamAV at DATA: the message is streamed to clamd (INSTREAM) and a virus rejects it.

Symbols: ``VIRUS_FOUND{name}`` (forced reject, ``554 5.7.1``), ``CLAMAV_TEMPERROR{why}``
(clamd down, slow, busy or answering an error; with ``on_error = "tempfail"``, the default,
also ``SCANNER_TEMPFAIL``: 451, the sender retries: the antivirus fails closed) and
``CLAMAV_SKIPPED{size>limit}`` (larger than ``max_size``, not scanned; clamd refusing the
stream as larger than its ``StreamMaxLength`` gives the same symbol: set ``max_size`` to that
value or below). The client is :mod:`proxy.scan.clamd`.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.data.scanning import (
    SCANNER_TEMPFAIL,
    check_timeout,
    failure,
    register_readiness,
    scanner_options,
    skipped,
)
from proxy.checks.options import OffByDefault
from proxy.observability import scanner_metrics
from proxy.scan.base import ScanError
from proxy.scan.clamd import Clamd

log = structlog.get_logger("spamgate.clamav")

VIRUS_FOUND = SymbolDef(
    "VIRUS_FOUND",
    "ClamAV found a virus or other malware in the message (evidence: the signature's name).",
    score=0.0,
    action="reject",
    reply="554 5.7.1 Message contains a virus ({evidence})",
    remedy="Do not send the infected file; clean the sending computer.",
)
CLAMAV_TEMPERROR = SymbolDef(
    "CLAMAV_TEMPERROR",
    "ClamAV gave no verdict: clamd down, too slow, every connection busy, or an error answer.",
    score=0.0,
    remedy="Nothing on the sender's side; the receiving site's virus scanner failed.",
)
CLAMAV_SKIPPED = SymbolDef(
    "CLAMAV_SKIPPED",
    "The message is larger than the virus scan limit and was not scanned (evidence: size>limit).",
    score=0.0,
    remedy="Nothing to fix; large files are better shared by link.",
)

_O = scanner_options("127.0.0.1:3310", "8s", 4, "25M", "tempfail")


@dataclass(frozen=True, slots=True)
class ClamavOptions(OffByDefault):
    address: str = _O["address"]
    timeout: float = _O["timeout"]
    max_connections: int = _O["max_connections"]
    max_size: int = _O["max_size"]
    on_error: str = _O["on_error"]
    ready_check: str = _O["ready_check"]


class Clamav(Check):
    name = "clamav"
    stage = Stage.DATA
    symbols = (VIRUS_FOUND, CLAMAV_TEMPERROR, CLAMAV_SKIPPED, SCANNER_TEMPFAIL)
    Options = ClamavOptions
    description = "ClamAV: the message streamed to clamd (INSTREAM); a virus rejects, a failure defers."
    io = True

    def __init__(self, options: ClamavOptions, services: Services) -> None:
        super().__init__(options, services)
        self.client = Clamd(options.address, timeout=options.timeout, max_connections=options.max_connections)

    async def start(self) -> None:
        check_timeout(self.name, self.options.timeout, self.services)
        register_readiness(self.client, self.options, self.services)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        opts: ClamavOptions = self.options
        size = len(ctx.message)
        if size > opts.max_size:
            return skipped(self.name, CLAMAV_SKIPPED, size, opts.max_size)
        try:
            answer = await self.client.scan(ctx.message)
        except ScanError as exc:
            if exc.kind == "too_big":
                log.warning("clamd_stream_limit", size=size, max_size=opts.max_size, error=exc.detail)
                return skipped(self.name, CLAMAV_SKIPPED, size, "StreamMaxLength")
            return failure(CLAMAV_TEMPERROR, exc, opts.on_error)
        if answer.infected:
            scanner_metrics.verdict(self.name, "virus")
            return [VIRUS_FOUND.hit(answer.name)]
        scanner_metrics.verdict(self.name, "clean")
        return []
