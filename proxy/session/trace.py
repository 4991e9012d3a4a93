"""What spamgate adds to and removes from a message before relaying it.

- A ``Received`` header (RFC 5321 4.4) naming the client's HELO, verified reverse name and IP,
  our host, the protocol (ESMTP, ESMTPS, UTF8SMTPS...), TLS details, the reference id, and the
  recipient when there is only one.
- Incoming ``Authentication-Results`` headers that claim our authserv-id are removed (RFC 8601
  section 5): only we may speak in our name.
- The verdict headers (symbols, score; the tag header) configured in ``[policy]``.
"""

from __future__ import annotations

import re
from email.utils import formatdate

from proxy.session.state import Connection, Transaction

_UNFOLD_END = re.compile(rb"\r\n(?![ \t])")


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
    name = conn.reverse_name or "unknown"
    helo = conn.helo or "unknown"
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


def header(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


def add_subject_prefix(message: bytes, prefix: str) -> bytes:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    m = re.search(rb"(?im)^subject:[ \t]*", head)
    p = prefix.encode("utf-8") + b" "
    if m is None:
        return b"Subject: " + p.rstrip() + b"\r\n" + message
    return message[: m.end()] + p + message[m.end() :]
