"""ARF abuse reports (RFC 5965) for spamtrap hits and rejected spam; off by default.

After a transaction where ``TRAP_HIT`` fired, or that spamgate's policy rejected at DATA, a
``message/feedback-report`` goes to ``to`` through ``relay``: rate-limited fleet-wide to
``max_per_hour`` and deduplicated per client IP and reason for ``dedup_time`` (both in the
store). At DATA the check keeps the message's header for the report (it emits no symbol);
a trap hit refused before DATA is reported with the envelope (:mod:`proxy.sharing.arf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosmtplib
import structlog

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol
from proxy.checks.options import OffByDefault
from proxy.config.fields import ConfigError, opt, parse_hostport
from proxy.model import Connection
from proxy.observability import metrics
from proxy.sharing.arf import build_arf, envelope_headers
from proxy.state.base import Store, StoreError
from proxy.state.util import Background

log = structlog.get_logger("spamgate.abuse_report")
MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True)
class AbuseReportOptions(OffByDefault):
    to: str = opt("", "Abuse address the reports go to (required when enabled).")
    relay: str = opt("", "Mail server 'host:port' that sends the reports (required when enabled).")
    sender: str = opt("", "From address of the reports; empty: postmaster@server.hostname.")
    on_trap_hits: bool = opt(True, "Report spamtrap hits (TRAP_HIT).")
    on_rejected: bool = opt(True, "Report messages spamgate's policy rejected at DATA.")
    max_per_hour: int = opt(20, "At most this many reports an hour, fleet-wide.", minimum=1)
    dedup_time: float = opt("24h", "One report per client IP and reason within this time.", kind="duration")


class AbuseReport(Check):
    name = "abuse_report"
    stage = Stage.DATA
    symbols = ()
    Options = AbuseReportOptions
    description = "ARF (RFC 5965) abuse reports for trap hits and rejected spam, rate-limited."

    def __init__(self, options: AbuseReportOptions, services: Services) -> None:
        super().__init__(options, services)
        self.bg = Background()
        if options.enabled:
            parse_hostport(options.relay, "checks.abuse_report.relay")
            if "@" not in options.to:
                raise ConfigError("checks.abuse_report.to", "an abuse address is required")

    async def start(self) -> None:
        self.store: Store = self.services.store
        self.services.on_transaction.append(self._on_transaction)

    async def stop(self) -> None:
        await self.bg.drain(5.0)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if ctx.txn is not None:
            head = ctx.message.split(b"\r\n\r\n", 1)[0][:MAX_HEADER]
            ctx.txn.notes["abuse_header"] = head + b"\r\n"
        return []

    def _on_transaction(self, conn: Connection, txn: Any, outcome: str) -> None:
        o: AbuseReportOptions = self.options
        names = {h.name for h in txn.notes.get("hits", txn.hits) if not h.observe}
        if o.on_trap_hits and "TRAP_HIT" in names:
            reason = "TRAP_HIT"
        elif o.on_rejected and txn.action == "reject" and "receive" in txn.stage_ms:
            reason = "REJECTED_SPAM"
        else:
            return
        self.bg.spawn(self._report(conn, txn, reason))

    async def _report(self, conn: Connection, txn: Any, reason: str) -> None:
        o: AbuseReportOptions = self.options
        try:
            if await self.store.incr(f"arf|dedup|{conn.ip_str}|{reason}", o.dedup_time) > 1:
                return
            if await self.store.window_hit("arf|rate", 3600) > o.max_per_hour:
                log.info("abuse_report_rate_limited", ip=conn.ip_str, reason=reason)
                return
        except StoreError:
            return
        hostname = self.services.config.server.hostname
        rcpts = [r.address for r in txn.rcpts]
        headers = txn.notes.get("abuse_header") or envelope_headers(
            conn.ip_str, conn.helo, txn.mail_from, rcpts, hostname
        )
        msg = build_arf(
            reporter=o.sender or f"postmaster@{hostname}",
            to=o.to,
            hostname=hostname,
            feedback_type="abuse",
            ip=conn.ip_str,
            mail_from=txn.mail_from,
            rcpts=rcpts,
            reason=reason,
            headers=headers,
        )
        host, port = parse_hostport(o.relay, "checks.abuse_report.relay")
        try:
            await aiosmtplib.send(msg, hostname=host, port=port, timeout=30, start_tls=False)
        except Exception as exc:
            log.warning("abuse_report_failed", ip=conn.ip_str, error=f"{type(exc).__name__}: {exc}")
            return
        metrics.sharing_event("report_sent")
        log.info("abuse_report_sent", ip=conn.ip_str, reason=reason, to=o.to)
