"""What spamgate adds to and removes from a message before relaying it.

- A ``Received`` header (RFC 5321 4.4) naming the client's HELO, verified reverse name and IP,
  our host, the protocol (ESMTP, ESMTPS, UTF8SMTPS...), TLS details, the reference id, and the
  recipient when there is only one.
- Incoming ``Authentication-Results`` headers that claim our authserv-id are removed (RFC 8601
  section 5): only we may speak in our name.
- The verdict headers (symbols, score; the tag header) configured in ``[policy]``. Copies of
  them that the client sent are removed first: only we may speak in our name there too.

Every value we write is sanitised (control characters become spaces, so nothing a client
sent can end a header line or start a new field) and folded at white space so that no line
is longer than 78 octets where a space allows it, and none longer than 998 octets ever
(RFC 5322 2.1.1).
"""

from __future__ import annotations

import re
from email.utils import formatdate

from proxy.model import Connection, Transaction

_UNFOLD_END = re.compile(rb"\r\n(?![ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PRODUCER_FOLD = re.compile(r"\r\n(?=[ \t])")
SOFT_LINE = 78
HARD_LINE = 998


def protocol_name(conn: Connection, txn: Transaction) -> str:
    proto = "ESMTP" if conn.esmtp else "SMTP"
    if txn.smtputf8:
        proto = "UTF8" + proto
    if conn.tls:
        proto += "S"
    return proto


def received_header(conn: Connection, txn: Transaction, hostname: str) -> bytes:
    ip = conn.ip_str
    literal = f"IPv6:{ip}" if conn.ip.version == 6 else ip
    name = sanitize(conn.reverse_name or "unknown").replace(" ", "")
    helo = sanitize(conn.helo or "unknown").replace(" ", "")[:255]
    tls = f"\r\n\t(using {conn.tls})" if conn.tls else ""
    rcpts = txn.accepted_rcpts
    for_clause = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
    text = (
        f"Received: from {helo} ({name} [{literal}]){tls}\r\n"
        f"\tby {hostname} (spamgate) with {protocol_name(conn, txn)} id {txn.ref}{for_clause};\r\n"
        f"\t{formatdate(localtime=False, usegmt=False)}\r\n"
    )
    return text.encode("utf-8", "surrogateescape")


def strip_own_auth_results(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """Remove Authentication-Results headers whose authserv-id is ours. Returns (message, removed)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    lower = head.lower()
    if b"authentication-results" not in lower:
        return message, 0
    ident = authserv_id.lower().encode()
    pattern = re.compile(
        rb"^authentication-results[ \t]*:[ \t\r\n]*(?:\([^)]*\)[ \t\r\n]*)?"
        + re.escape(ident)
        + rb"(?:[ \t\r\n;/]|$)",
        re.IGNORECASE,
    )
    out: list[bytes] = []
    removed = 0
    for field in _split_fields(head):
        unfolded = field.replace(b"\r\n", b"")
        if pattern.match(unfolded):
            removed += 1
            continue
        out.append(field)
    if not removed:
        return message, 0
    rest = b"" if end < 0 else message[end + 2 :]
    return b"".join(out) + rest, removed


def _split_fields(head: bytes) -> list[bytes]:
    """Split a header block into whole fields (with their folded lines and final CRLF)."""
    fields: list[bytes] = []
    start = 0
    for m in _UNFOLD_END.finditer(head):
        fields.append(head[start : m.end()])
        start = m.end()
    if start < len(head):
        fields.append(head[start:])
    return fields


def sanitize(value: str) -> str:
    """Control characters (CR and LF included) become spaces; a tab stays."""
    return _CONTROL.sub(" ", value)


def fold(name: str, value: str) -> str:
    """``Name: value`` folded at white space (RFC 5322 2.2.3): lines of at most 78 octets
    where the words allow it; a word too long for a line is cut so that no line exceeds 998.
    A fold the value already has (CRLF then a space or tab) is kept."""
    head = f"{name}:"
    lines: list[str] = []
    for n, segment in enumerate(_PRODUCER_FOLD.split(value)):
        line = head if n == 0 else ""
        start = len(line)
        for word in sanitize(segment).split():
            limit = HARD_LINE - 8 - len(head)
            if not word.isascii():
                limit //= 4  # at most four octets a character in UTF-8
            for i in range(0, len(word), limit):
                piece = word[i : i + limit]
                if len(line) > start and len(line) + 1 + len(piece) > SOFT_LINE:
                    lines.append(line)
                    line, start = "", 0
                line += (" " if n == 0 or len(line) > start else "\t") + piece
        if line or n == 0:
            lines.append(line)
    return "\r\n".join(lines)


def header(name: str, value: str) -> bytes:
    """One header field we write: the value sanitised and folded, CRLF-terminated."""
    return (fold(name, value) + "\r\n").encode("utf-8", "surrogateescape")


def strip_fields(message: bytes, names: tuple[str, ...] | list[str], prefixes: tuple[str, ...] = ()) -> bytes:
    """Remove every header field named in ``names`` or starting with one of ``prefixes``
    (case-insensitive), with its continuation lines. The body is untouched."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    lower = head.lower()
    wanted = [n.lower().encode() for n in names if n]
    starts = [p.lower().encode() for p in prefixes if p]
    if not any(w in lower for w in wanted + starts):
        return message
    out: list[bytes] = []
    removed = False
    for field in _split_fields(head):
        name = field.split(b":", 1)[0].strip().lower() if b":" in field else b""
        if name and (name in wanted or any(name.startswith(p) for p in starts)):
            removed = True
            continue
        out.append(field)
    if not removed:
        return message
    rest = b"" if end < 0 else message[end + 2 :]
    return b"".join(out) + rest


def add_subject_prefix(message: bytes, prefix: str) -> bytes:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    m = re.search(rb"(?im)^subject:[ \t]*", head)
    p = prefix.encode("utf-8") + b" "
    if m is None:
        return b"Subject: " + p.rstrip() + b"\r\n" + message
    return message[: m.end()] + p + message[m.end() :]


def remove_instances(message: bytes, removals: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> bytes:
    """Remove header fields by name and instance (rspamd's ``remove_headers``): 0 removes every
    field of that name, n the n-th (from 1), -n the n-th from the end. The body is untouched."""
    if not removals:
        return message
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    fields = _split_fields(head)
    names = [f.split(b":", 1)[0].strip().lower() if b":" in f else b"" for f in fields]
    drop: set[int] = set()
    for name, order in removals:
        at = [i for i, n in enumerate(names) if n == name.lower().encode()]
        if order == 0:
            drop.update(at)
        elif 0 < order <= len(at):
            drop.add(at[order - 1])
        elif order < 0 and -order <= len(at):
            drop.add(at[order])
    if not drop:
        return message
    rest = b"" if end < 0 else message[end + 2 :]
    return b"".join(f for i, f in enumerate(fields) if i not in drop) + rest
