"""A bounded MIME walk over the message bytes: parts, their headers, their decoded bodies.

Lighter than the stdlib ``email`` parser (which builds a full object tree in Python) and
bounded in every direction a sender controls:

- ``max_parts``: entities visited (multiparts included); the rest of the message is not walked
  and ``problems["too_many_parts"]`` says how far the walk got.
- ``max_depth``: nesting of multiparts and attached messages; deeper entities are not opened
  (``problems["too_deep"]``).
- ``max_decoded``: bytes decoded from base64 / quoted-printable over the whole message; a leaf
  that would pass the budget keeps ``body = None`` (``problems["decode_limit"]``).

Boundaries follow RFC 2046 5.1.1: a delimiter is ``--boundary`` at the start of a line; a
multipart with no boundary parameter, a boundary that never occurs or no closing delimiter is
``problems["bad_boundary"]`` (the parts found are still walked). ``message/rfc822`` parts are
opened as nested messages. The walk is iterative: a deeply nested message cannot exhaust the
interpreter's stack.
"""

from __future__ import annotations

import binascii
import itertools
import re
from dataclasses import dataclass, field

__all__ = ["Limits", "Mime", "Part", "params", "split_header", "walk"]

_PARAM_RE = re.compile(r';\s*([!#-\'*+.0-9A-Z^-~]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)', re.I)
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")
_WANTED = (b"content-type", b"content-transfer-encoding", b"content-disposition")


@dataclass(frozen=True, slots=True)
class Limits:
    max_parts: int = 1000
    max_depth: int = 16
    max_decoded: int = 16 * 1024 * 1024


@dataclass(slots=True)
class Part:
    """One MIME entity. ``body`` is the decoded content of a leaf (None for a multipart or a
    leaf past the decode budget)."""

    depth: int
    ctype: str
    params: dict[str, str]
    disposition: str
    filename: str
    encoding: str
    body: bytes | None = None
    size: int = 0  # encoded size of the body

    @property
    def is_multipart(self) -> bool:
        return self.ctype.startswith("multipart/")

    @property
    def is_attachment(self) -> bool:
        """A named leaf, or any leaf that is not text (images, archives, programs...)."""
        if self.is_multipart or self.ctype == "message/rfc822":
            return False
        return bool(self.filename) or self.disposition == "attachment" or not self.ctype.startswith("text/")


@dataclass(slots=True)
class Mime:
    parts: list[Part] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    depth: int = 0  # the deepest nesting seen
    decoded: int = 0


def split_header(entity: bytes) -> tuple[bytes, bytes]:
    """(header block, body) at the first empty line (CRLF or bare LF)."""
    if entity.startswith((b"\r\n", b"\n")):
        return b"", entity[2:] if entity.startswith(b"\r\n") else entity[1:]
    end = entity.find(b"\r\n\r\n")
    lf = entity.find(b"\n\n", 0, end if end >= 0 else len(entity))
    if end < 0 or lf >= 0:
        return (entity, b"") if lf < 0 else (entity[: lf + 1], entity[lf + 2 :])
    return entity[: end + 2], entity[end + 4 :]


def _fields(head: bytes) -> dict[bytes, str]:
    """The MIME fields of a header block, unfolded (the first of each name)."""
    out: dict[bytes, str] = {}
    current: bytes | None = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                out[current] += " " + line.strip().decode("utf-8", "replace")
            continue
        current = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        if name in _WANTED and name not in out:
            current = name
            out[name] = line[colon + 1 :].strip().decode("utf-8", "replace")
    return out


def params(value: str) -> tuple[str, dict[str, str]]:
    """``'text/plain; charset="utf-8"'`` -> ``("text/plain", {"charset": "utf-8"})``; RFC 2231
    continuations (``name*0*=``) are joined and their charset decoded."""
    if not value:
        return "", {}
    main, _, rest = value.partition(";")
    out: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for m in _PARAM_RE.finditer(";" + rest):
        key, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = raw[1:-1]
            if "\\" in raw:
                raw = re.sub(r"\\(.)", r"\1", raw)
        star = key.endswith("*")
        base, _, num = key.rstrip("*").partition("*")
        if num.isdigit() or star:
            pieces.setdefault(base, {})[int(num) if num.isdigit() else 0] = (raw, star)
        else:
            out.setdefault(key, raw)
    for base, segs in pieces.items():
        charset = "utf-8"
        joined = ""
        for i in sorted(segs):
            raw, encoded = segs[i]
            if encoded and i == 0 and raw.count("'") >= 2:
                charset, _, raw = raw.partition("'")[0], "", raw.split("'", 2)[2]
            joined += raw if encoded else raw.replace("%", "%25")
        out[base] = _pct(joined, charset or "utf-8")
    return main.strip().lower(), out


def _pct(text: str, charset: str) -> str:
    from urllib.parse import unquote_to_bytes

    try:
        return unquote_to_bytes(text).decode(charset, "replace")
    except LookupError:
        return unquote_to_bytes(text).decode("latin-1")


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words in a file name (``=?utf-8?B?...?=``)."""
    if "=?" not in text or not _ENCODED_WORD.search(text):
        return text
    from email.header import decode_header

    out = []
    try:
        for chunk, charset in decode_header(text):
            out.append(chunk.decode(charset or "latin-1", "replace") if isinstance(chunk, bytes) else chunk)
    except (ValueError, LookupError):
        return text
    return "".join(out)


def decode_body(raw: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return binascii.a2b_base64(raw)
        except binascii.Error:
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
            return binascii.a2b_base64(clean[: len(clean) - len(clean) % 4] or b"")
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    return raw


def _split_multipart(body: bytes, boundary: bytes) -> tuple[list[bytes], str]:
    """The body parts between delimiters, and what was wrong ('' when nothing)."""
    delim = b"--" + boundary
    starts: list[tuple[int, int, bool]] = []  # (start of the line, end of the line, closing)
    pos = 0 if body.startswith(delim) else body.find(b"\n" + delim)
    while pos >= 0:
        line_start = pos if body.startswith(delim, pos) else pos + 1
        after = line_start + len(delim)
        closing = body.startswith(b"--", after)
        eol = body.find(b"\n", after)
        eol = len(body) if eol < 0 else eol + 1
        starts.append((line_start, eol, closing))
        if closing:
            break
        pos = body.find(b"\n" + delim, eol - 1)
    if not starts:
        return [], "boundary not found"
    parts = []
    for (_, end, _), (nxt, _, _) in itertools.pairwise(starts):
        chunk = body[end:nxt]
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        parts.append(chunk)
    return parts, "" if starts[-1][2] else "no closing delimiter"


def walk(message: bytes, limits: Limits = Limits()) -> Mime:
    """Walk the message's entities depth first, within ``limits``."""
    out = Mime()
    budget = limits.max_decoded
    stack: list[tuple[bytes, int, str]] = [(message, 0, "text/plain")]
    while stack:
        entity, depth, default = stack.pop()
        if len(out.parts) >= limits.max_parts:
            out.problems["too_many_parts"] = f">{limits.max_parts}"
            break
        head, body = split_header(entity)
        f = _fields(head)
        ctype, ps = params(f.get(b"content-type", "")) if b"content-type" in f else (default, {})
        if "/" not in ctype:
            ctype = default
        disp, dps = params(f.get(b"content-disposition", ""))
        name = dps.get("filename") or ps.get("name") or ""
        enc = f.get(b"content-transfer-encoding", "7bit").strip().lower()
        part = Part(depth, ctype, ps, disp, _decode_words(name).strip(), enc, size=len(body))
        out.parts.append(part)
        out.depth = max(out.depth, depth)
        if ctype.startswith("multipart/") or ctype == "message/rfc822":
            if depth + 1 > limits.max_depth:
                out.problems["too_deep"] = f">{limits.max_depth}"
                continue
            if ctype == "message/rfc822":
                stack.append((decode_body(body, enc), depth + 1, "text/plain"))
                continue
            boundary = ps.get("boundary", "")
            if not boundary:
                out.problems.setdefault("bad_boundary", f"{ctype} without boundary")
                continue
            children, problem = _split_multipart(body, boundary.encode("utf-8", "replace"))
            if problem:
                out.problems.setdefault("bad_boundary", problem)
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            stack.extend((c, depth + 1, child_default) for c in reversed(children))
            continue
        if len(body) > budget:
            out.problems["decode_limit"] = f">{limits.max_decoded}"
            continue
        part.body = decode_body(body, enc)
        budget -= len(body)
        out.decoded += len(part.body)
    return out
