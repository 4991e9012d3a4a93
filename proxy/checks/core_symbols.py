"""Symbols the session itself emits: protocol limits and the pipeline's own failures.

They are not tied to a check module but live in the same policy, so their scores, actions and
replies can be changed in ``rules/`` like any other (within ``always_enforced``).
"""

from __future__ import annotations

from proxy.model import SymbolDef

CHECK_ERROR = SymbolDef(
    "CHECK_ERROR",
    "A check failed with an internal error; the stage went on without it (evidence: the check).",
    remedy="Nothing for the sender; the postmaster should read the error log.",
)
STAGE_TIMEOUT = SymbolDef(
    "STAGE_TIMEOUT",
    "Checks did not finish within the stage budget (policy.stage_timeout); evidence names them.",
    remedy="Usually a slow DNS server at the receiving site; retrying later helps.",
)
SIZE_EXCEEDED = SymbolDef(
    "SIZE_EXCEEDED",
    "The message is larger than limits.max_message_size (declared in SIZE= or sent).",
    score=0.0,
    action="reject",
    reply="552 5.3.4 Message size exceeds fixed maximum message size",
    always_enforced=True,
    remedy="Send a smaller message, or share large files by link.",
)
BARE_NEWLINE = SymbolDef(
    "BARE_NEWLINE",
    "The message contains a bare LF or CR (SMTP smuggling attempt or broken client).",
    score=0.0,
    action="reject",
    reply="554 5.5.2 Bare <LF> or <CR> received; lines must end with <CR><LF>",
    always_enforced=True,
    remedy="Fix the sending software to end every line with CRLF (RFC 5321 2.3.8).",
)
LINE_TOO_LONG = SymbolDef(
    "LINE_TOO_LONG",
    "A message line is longer than limits.text_line_length.",
    score=0.0,
    action="reject",
    reply="500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    always_enforced=True,
    remedy="Encode long lines (quoted-printable or base64), as RFC 5322 2.1.1 requires.",
)
NUL_IN_DATA = SymbolDef(
    "NUL_IN_DATA",
    "The message contains NUL bytes (a downstream that drops them could read a smuggled end of data).",
    score=0.0,
    action="reject",
    reply="554 5.6.0 Message contains NUL characters",
    always_enforced=True,
    remedy="Encode binary content (base64); SMTP text may not contain NUL (RFC 5321 4.5.2).",
)
HEADER_TOO_LARGE = SymbolDef(
    "HEADER_TOO_LARGE",
    "The message's header block is larger than limits.max_header_size.",
    score=0.0,
    action="reject",
    reply="552 5.3.4 Message header size exceeds limit",
    always_enforced=True,
    remedy="Send fewer or shorter header fields.",
)
TOO_MANY_RCPTS = SymbolDef(
    "TOO_MANY_RCPTS",
    "More recipients than limits.max_recipients in one message; the extra ones are deferred.",
    score=0.0,
    action="tempfail",
    reply="452 4.5.3 Too many recipients",
    always_enforced=True,
    remedy="None needed: a compliant client sends the deferred recipients in a new transaction.",
)

CORE_SYMBOLS = (
    CHECK_ERROR,
    STAGE_TIMEOUT,
    SIZE_EXCEEDED,
    BARE_NEWLINE,
    LINE_TOO_LONG,
    NUL_IN_DATA,
    HEADER_TOO_LARGE,
    TOO_MANY_RCPTS,
)
