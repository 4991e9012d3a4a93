"""Sender address syntax (MAIL stage): invalid mailbox, null sender, address literal domain."""

from __future__ import annotations

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.smtp.address import is_valid_mailbox

MAIL_INVALID = SymbolDef(
    "MAIL_INVALID",
    "The MAIL FROM address is not a valid RFC 5321 mailbox.",
    score=5.0,
    action="reject",
    reply="553 5.1.7 Sender address rejected: invalid address",
    remedy="Send from a valid address, local-part@domain.",
)
MAIL_NULL = SymbolDef(
    "MAIL_NULL",
    "Null sender <>: a bounce or an auto-reply (legitimate, noted for the other checks).",
    score=0.0,
    remedy="Nothing to fix.",
)
MAIL_DOMAIN_LITERAL = SymbolDef(
    "MAIL_DOMAIN_LITERAL",
    "The sender domain is an address literal (user@[192.0.2.1]); real senders use a domain.",
    score=2.0,
    remedy="Send from an address at a domain name.",
)


class SenderSyntax(Check):
    name = "sender_syntax"
    stage = Stage.MAIL
    symbols = (MAIL_INVALID, MAIL_NULL, MAIL_DOMAIN_LITERAL)
    Options = BaseOptions
    description = "Syntax of the envelope sender."

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        assert ctx.txn is not None
        sender = ctx.txn.mail_from
        if not sender:
            return [MAIL_NULL.hit()]
        if not is_valid_mailbox(sender, utf8=ctx.txn.smtputf8):
            return [MAIL_INVALID.hit(sender[:200])]
        if sender.rpartition("@")[2].startswith("["):
            return [MAIL_DOMAIN_LITERAL.hit(sender)]
        return []
