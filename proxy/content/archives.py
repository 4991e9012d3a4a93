"""What an archive holds (zip, tar, gzip), read in memory within bounds; never extracted to disk.

:func:`inspect` lists the members of an archive given as bytes: their path inside the archive
(``outer.zip/inner.zip/evil.exe``), whether they are encrypted, and the kind of their first
bytes (:func:`proxy.content.magic.detect`). Archives inside archives are opened too, down to
``Budget.depth`` levels. The readers are small and bounded on purpose (``zipfile`` reads a whole
central directory in Python, however many entries it declares):

- zip: the central directory, at most ``max_members`` entries; the encrypted flag (bit 0 of the
  general purpose flags) is read, never the data of an encrypted entry. Stored and deflated
  members are decompressed only to sniff their first bytes, or whole (up to the budget) when
  they are archives to open in turn.
- tar (ustar, GNU long names, pax ``path``): 512-byte headers walked in place.
- gzip: the original file name from the header (``FNAME``), the content decompressed up to the
  budget (a ``.tar.gz`` is then read as a tar).

``Budget.bytes`` bounds the bytes decompressed for the whole message (bombs stop there);
every shortfall is recorded in ``Listing.problems`` (``depth``, ``size``, ``members``,
``corrupt``) so a check can say the archive was not fully inspected.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from proxy.content.magic import detect, extension

__all__ = ["Budget", "Listing", "Member", "inspect"]

_SNIFF = 64
_EOCD = b"PK\x05\x06"
_CDIR = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_NESTED_EXT = frozenset({"zip", "jar", "gz", "tgz", "tar"})


@dataclass(slots=True)
class Budget:
    depth: int = 3
    bytes: int = 10 * 1024 * 1024
    max_members: int = 1000


@dataclass(frozen=True, slots=True)
class Member:
    path: str  # "outer.zip/inner/evil.exe"
    name: str  # the member's own name, "evil.exe"
    kind: str = ""  # magic of its first bytes, when read
    encrypted: bool = False


@dataclass(slots=True)
class Listing:
    members: list[Member] = field(default_factory=list)
    encrypted: bool = False
    problems: list[str] = field(default_factory=list)


def _inflate(data: bytes, method: int, limit: int) -> bytes | None:
    if method == 0:
        return data[:limit]
    if method == 8:
        try:
            return zlib.decompressobj(-15).decompress(data, max(1, limit))
        except zlib.error:
            return None
    return None


def _zip(data: bytes, where: str, budget: Budget, depth: int, out: Listing) -> None:
    eocd = data.rfind(_EOCD, max(0, len(data) - 65557))
    if eocd < 0 or len(data) < eocd + 22:
        out.problems.append(f"{where}:corrupt")
        return
    _, _, _, _, total, cd_size, cd_off, _ = struct.unpack_from("<4s4H2LH", data, eocd)
    shift = eocd - cd_size - cd_off  # bytes prepended to the archive (self-extractors)
    pos = cd_off + shift
    if shift < 0 or pos < 0:
        out.problems.append(f"{where}:corrupt")
        return
    for i in range(total):
        if i >= budget.max_members:
            out.problems.append(f"{where}:members>{budget.max_members}")
            return
        if not data.startswith(_CDIR, pos) or pos + 46 > len(data):
            out.problems.append(f"{where}:corrupt")
            return
        (flags, method, csize, usize, nlen, xlen, clen, local) = (
            struct.unpack_from("<H", data, pos + 8)[0],
            struct.unpack_from("<H", data, pos + 10)[0],
            *struct.unpack_from("<2L3H", data, pos + 20),
            struct.unpack_from("<L", data, pos + 42)[0],
        )
        raw = data[pos + 46 : pos + 46 + nlen]
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        pos += 46 + nlen + xlen + clen
        if name.endswith("/"):
            continue
        encrypted = bool(flags & 1)
        out.encrypted = out.encrypted or encrypted
        kind, content = "", None
        lp = local + shift
        if not encrypted and data.startswith(_LOCAL, lp) and lp + 30 <= len(data):
            lnlen, lxlen = struct.unpack_from("<2H", data, lp + 26)
            start = lp + 30 + lnlen + lxlen
            nested = extension(name) in _NESTED_EXT and depth < budget.depth
            want = min(usize, budget.bytes) if nested else _SNIFF
            content = _inflate(data[start : start + csize], method, want)
            if content is not None:
                budget.bytes -= len(content)
                kind = detect(content)
        out.members.append(Member(f"{where}/{name}", name.rsplit("/", 1)[-1], kind, encrypted))
        if content is not None and kind in ("zip", "gzip", "tar") and extension(name) in _NESTED_EXT:
            _open(content, kind, f"{where}/{name}", budget, depth + 1, out=out, size=usize)


def _octal(field_: bytes) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256
        return int.from_bytes(field_[1:], "big")
    text = field_.strip(b" \x00")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return -1


def _tar(data: bytes, where: str, budget: Budget, depth: int, out: Listing) -> None:
    pos, count, longname = 0, 0, ""
    while pos + 512 <= len(data):
        head = data[pos : pos + 512]
        if head.count(0) == 512:
            return
        size = _octal(head[124:136])
        if size < 0:
            out.problems.append(f"{where}:corrupt")
            return
        kind_flag = head[156:157]
        body = data[pos + 512 : pos + 512 + size]
        pos += 512 + (size + 511) // 512 * 512
        if kind_flag == b"L":
            longname = body.rstrip(b"\x00").decode("utf-8", "replace")
            continue
        if kind_flag in (b"x", b"g"):
            for rec in body.split(b"\n"):
                if b" path=" in rec:
                    longname = rec.split(b" path=", 1)[1].decode("utf-8", "replace")
            continue
        name = longname or head[:100].rstrip(b"\x00").decode("utf-8", "replace")
        if not longname and head[257:262] == b"ustar" and head[345:500].strip(b"\x00"):
            name = head[345:500].rstrip(b"\x00").decode("utf-8", "replace") + "/" + name
        longname = ""
        if kind_flag not in (b"0", b"\x00", b"7"):
            continue
        count += 1
        if count > budget.max_members:
            out.problems.append(f"{where}:members>{budget.max_members}")
            return
        kind = detect(body[:1024])
        out.members.append(Member(f"{where}/{name}", name.rsplit("/", 1)[-1], kind))
        if kind in ("zip", "gzip", "tar") and depth < budget.depth:
            _open(body, kind, f"{where}/{name}", budget, depth + 1, out=out, size=len(body))
    if pos < len(data) and data[pos:].strip(b"\x00"):
        out.problems.append(f"{where}:corrupt")


def _gzip(data: bytes, where: str, budget: Budget, depth: int, out: Listing) -> None:
    name = ""
    if len(data) > 10 and data[3] & 0x08:  # FNAME, after an optional FEXTRA
        pos = 10
        if data[3] & 0x04:
            pos += 2 + int.from_bytes(data[10:12], "little")
        end = data.find(b"\x00", pos)
        name = data[pos:end].decode("latin-1") if end > 0 else ""
    if not name:
        base = where.rsplit("/", 1)[-1]
        name = (
            base[:-3]
            if base.lower().endswith(".gz")
            else base[:-4] + ".tar"
            if base.lower().endswith(".tgz")
            else ""
        )
    try:
        content = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, max(1, budget.bytes))
    except zlib.error:
        out.problems.append(f"{where}:corrupt")
        return
    budget.bytes -= len(content)
    if budget.bytes <= 0:
        out.problems.append(f"{where}:size")
    kind = detect(content)
    if kind == "tar" and depth < budget.depth:
        _tar(content, where, budget, depth + 1, out)
        return
    name = name or "(content)"
    out.members.append(Member(f"{where}/{name}", name, kind))
    if kind in ("zip", "gzip") and depth < budget.depth:
        _open(content, kind, f"{where}/{name}", budget, depth + 1, out=out, size=len(content))


def _open(data: bytes, kind: str, where: str, budget: Budget, depth: int, *, out: Listing, size: int) -> None:
    if depth > budget.depth:
        out.problems.append(f"{where}:depth")
        return
    if len(data) < size or budget.bytes <= 0:
        out.problems.append(f"{where}:size")
        return
    {"zip": _zip, "tar": _tar, "gzip": _gzip}[kind](data, where, budget, depth, out)


def inspect(data: bytes, kind: str, name: str, budget: Budget) -> Listing:
    """The members of the archive ``data`` (of kind ``zip``, ``tar`` or ``gzip``) named ``name``.
    A malformed archive never raises: what was read is kept and ``problems`` says ``corrupt``."""
    out = Listing()
    if kind in ("zip", "tar", "gzip"):
        try:
            _open(data, kind, name or "archive", budget, 1, out=out, size=0)
        except (struct.error, ValueError, IndexError, zlib.error, OverflowError):
            out.problems.append(f"{name or 'archive'}:corrupt")
    return out
