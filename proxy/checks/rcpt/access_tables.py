"""Recipient and access tables (RCPT stage): unknown users and local access rules, in O(1).

The tables are loaded by :mod:`proxy.state.tables` (``[tables]``), re-read on SIGHUP and when
a file changes. This check only looks up:

- the recipient table, when configured: a recipient of a domain the table covers that is not
  listed (and no ``@domain`` catch-all) fires ``RCPT_UNKNOWN`` (550 5.1.1), so the downstream
  is never asked about it;
- the access rules, most specific first: recipient, recipient domain, sender, sender domain,
  client address, client network (longest prefix). The first match fires ``ACCESS_OK``
  (a large negative score, like the IP allowlist: relay control is never skipped),
  ``ACCESS_REJECT`` (554 5.7.1 with the rule's text), ``ACCESS_DEFER`` (450 4.7.1) or
  ``ACCESS_SCORE`` with the rule's score.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.state.tables import AccessRule, Tables

RCPT_UNKNOWN = SymbolDef(
    "RCPT_UNKNOWN",
    "The recipient is not in the recipient table of its domain.",
    score=0.0,
    action="reject",
    reply="550 5.1.1 Recipient address rejected: User unknown in local recipient table",
    remedy="Check the recipient address with its owner.",
)
ACCESS_OK = SymbolDef(
    "ACCESS_OK",
    "An access rule says OK for the recipient, sender or client.",
    score=-50.0,
    remedy="Nothing to fix: the site allows this mail explicitly.",
)
ACCESS_REJECT = SymbolDef(
    "ACCESS_REJECT",
    "An access rule rejects the recipient, sender or client.",
    score=0.0,
    action="reject",
    reply="554 5.7.1 {evidence}",
    remedy="Ask the receiving site's postmaster.",
)
ACCESS_DEFER = SymbolDef(
    "ACCESS_DEFER",
    "An access rule defers the recipient, sender or client.",
    score=0.0,
    action="tempfail",
    reply="450 4.7.1 {evidence}",
    remedy="Try again later.",
)
ACCESS_SCORE = SymbolDef(
    "ACCESS_SCORE",
    "An access rule scores the recipient, sender or client (the rule's own score).",
    score=0.0,
    remedy="Ask the receiving site's postmaster.",
)


@dataclass(frozen=True, slots=True)
class AccessTablesOptions(BaseOptions):
    pass


def _evidence(rule: AccessRule, default: str) -> str:
    return f"{rule.text or default} ({rule.key})"[:200]


class AccessTables(Check):
    name = "access_tables"
    stage = Stage.RCPT
    symbols = (RCPT_UNKNOWN, ACCESS_OK, ACCESS_REJECT, ACCESS_DEFER, ACCESS_SCORE)
    Options = AccessTablesOptions
    description = "Valid recipients and access rules from [tables] files (O(1) lookups)."

    async def start(self) -> None:
        self.tables: Tables | None = self.services.extras.get("tables")

    def _rule(self, ctx: CheckContext) -> AccessRule | None:
        assert self.tables is not None
        access = self.tables.access
        if not access.exact and not access.networks:
            return None
        rcpt = ctx.rcpt.lower()
        sender = (ctx.txn.mail_from if ctx.txn else "").lower()
        keys = [f"rcpt:{rcpt}", f"rcpt:@{rcpt.rpartition('@')[2]}"]
        keys += [f"from:{sender}", f"from:@{sender.rpartition('@')[2]}"] if sender else ["from:<>"]
        for key in keys:
            rule = access.exact.get(key)
            if rule is not None:
                return rule
        return access.client(ctx.conn.ip_str)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if self.tables is None:
            return []
        out: list[Symbol] = []
        recipients = self.tables.recipients
        if recipients is not None and recipients.known(ctx.rcpt) is False:
            out.append(RCPT_UNKNOWN.hit(ctx.rcpt.lower()[:200]))
        rule = self._rule(ctx)
        if rule is not None:
            if rule.action == "ok":
                out.append(ACCESS_OK.hit(rule.key[:200]))
            elif rule.action == "reject":
                out.append(ACCESS_REJECT.hit(_evidence(rule, "Access denied")))
            elif rule.action == "defer":
                out.append(ACCESS_DEFER.hit(_evidence(rule, "Deferred by local policy, try again later")))
            else:
                out.append(ACCESS_SCORE.hit(rule.key[:200], score=rule.score))
        return out
