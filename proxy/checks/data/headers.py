"""Header sanity (DATA stage): the RFC 5322 basics a real mail client always gets right.

Missing or repeated From, missing Date or Message-ID, a header section that is not one
(no colon, no blank line before the body), too many Received headers (a mail loop), and
8-bit bytes in headers of a message not sent with SMTPUTF8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

HDR_FROM_MISSING = SymbolDef(
    "HDR_FROM_MISSING",
    "The message has no From header (RFC 5322 3.6 requires one).",
    score=3.0,
    remedy="Add a From header naming the author.",
)
HDR_FROM_MULTIPLE = SymbolDef(
    "HDR_FROM_MULTIPLE",
    "The message has more than one From header (a DMARC bypass trick).",
    score=5.0,
    remedy="Send exactly one From header.",
)
HDR_DATE_MISSING = SymbolDef(
    "HDR_DATE_MISSING",
    "The message has no Date header (RFC 5322 3.6 requires one).",
    score=1.0,
    remedy="Add a Date header.",
)
HDR_MSGID_MISSING = SymbolDef(
    "HDR_MSGID_MISSING",
    "The message has no Message-ID header.",
    score=1.0,
    remedy="Add a Message-ID header; every real mail client does.",
)
HDR_MALFORMED = SymbolDef(
    "HDR_MALFORMED",
    "The header section is malformed (a line that is neither a field nor a continuation).",
    score=3.0,
    remedy="Fix the sending software: header lines are 'Name: value'.",
)
HDR_RECEIVED_LOOP = SymbolDef(
    "HDR_RECEIVED_LOOP",
    "More Received headers than checks.header_sanity.max_received: a mail loop.",
    score=0.0,
    action="reject",
    reply="554 5.4.6 Too many hops (mail loop detected)",
    remedy="Fix the forwarding loop between your servers.",
)
HDR_8BIT_NO_SMTPUTF8 = SymbolDef(
    "HDR_8BIT_NO_SMTPUTF8",
    "Raw 8-bit bytes in the headers of a message not sent with SMTPUTF8.",
    score=1.0,
    remedy="Encode non-ASCII header text (RFC 2047) or send with SMTPUTF8.",
)

_FIELD_RE = re.compile(rb"^[!-9;-~]+[ \t]*:")


@dataclass(frozen=True, slots=True)
class HeaderSanityOptions(BaseOptions):
    max_received: int = opt(50, "Received headers allowed before HDR_RECEIVED_LOOP.", minimum=1)


def header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message
    return message[: end + 2]


class HeaderSanity(Check):
    name = "header_sanity"
    stage = Stage.DATA
    symbols = (
        HDR_FROM_MISSING,
        HDR_FROM_MULTIPLE,
        HDR_DATE_MISSING,
        HDR_MSGID_MISSING,
        HDR_MALFORMED,
        HDR_RECEIVED_LOOP,
        HDR_8BIT_NO_SMTPUTF8,
    )
    Options = HeaderSanityOptions
    description = "RFC 5322 header basics."

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        head = header_block(ctx.message)
        counts: dict[bytes, int] = {}
        out: list[Symbol] = []
        malformed = b""
        for line in head.split(b"\r\n"):
            if not line:
                continue
            if line[0] in b" \t":
                continue
            m = _FIELD_RE.match(line)
            if m is None:
                if not malformed:
                    malformed = line[:60]
                continue
            name = line[: line.index(b":")].rstrip(b" \t").lower()
            counts[name] = counts.get(name, 0) + 1
        if malformed:
            out.append(HDR_MALFORMED.hit(malformed.decode("ascii", "replace")))
        n_from = counts.get(b"from", 0)
        if n_from == 0:
            out.append(HDR_FROM_MISSING.hit())
        elif n_from > 1:
            out.append(HDR_FROM_MULTIPLE.hit(str(n_from)))
        if not counts.get(b"date"):
            out.append(HDR_DATE_MISSING.hit())
        if not counts.get(b"message-id"):
            out.append(HDR_MSGID_MISSING.hit())
        received = counts.get(b"received", 0)
        if received > self.options.max_received:
            out.append(HDR_RECEIVED_LOOP.hit(str(received)))
        if not (ctx.txn and ctx.txn.smtputf8) and not head.isascii():
            out.append(HDR_8BIT_NO_SMTPUTF8.hit())
        return out
