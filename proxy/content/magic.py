"""What a file is, from its first bytes (magic numbers), and what its name or type claims.

:func:`detect` names the kind of a file from a signature table (``pe``, ``elf``, ``macho``,
``pdf``, ``zip``, ``gzip``, ``jpeg``...; ``""`` when unknown: plain text and most data).
:func:`expected` gives the kinds a declared MIME type or file name extension allows;
:func:`contradicts` is True when the content is of a known kind the declaration excludes
(a ``.pdf`` that starts with ``MZ``). An unknown kind never contradicts anything.
"""

from __future__ import annotations

__all__ = ["ARCHIVES", "EXECUTABLES", "contradicts", "detect", "expected", "extension"]

# (offset, signature, kind), most specific first.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x7fELF", "elf"),
    (0, b"\xfe\xed\xfa\xce", "macho"),
    (0, b"\xfe\xed\xfa\xcf", "macho"),
    (0, b"\xce\xfa\xed\xfe", "macho"),
    (0, b"\xcf\xfa\xed\xfe", "macho"),
    (0, b"\xca\xfe\xba\xbe", "macho"),  # a universal binary (or a Java class: a program too)
    (0, b"L\x00\x00\x00\x01\x14\x02\x00", "lnk"),
    (0, b"#!", "script"),
    (0, b"PK\x03\x04", "zip"),
    (0, b"PK\x05\x06", "zip"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"Rar!\x1a\x07", "rar"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"MSCF", "cab"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (0, b"{\\rtf", "rtf"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (257, b"ustar", "tar"),
)
EXECUTABLES = frozenset({"pe", "elf", "macho", "lnk"})
ARCHIVES = frozenset({"zip", "gzip", "tar", "rar", "7z", "bzip2", "xz", "cab"})

_BY_TYPE: dict[str, frozenset[str]] = {
    "application/pdf": frozenset({"pdf"}),
    "image/jpeg": frozenset({"jpeg"}),
    "image/jpg": frozenset({"jpeg"}),
    "image/pjpeg": frozenset({"jpeg"}),
    "image/png": frozenset({"png"}),
    "image/gif": frozenset({"gif"}),
    "application/zip": frozenset({"zip"}),
    "application/x-zip-compressed": frozenset({"zip"}),
    "application/gzip": frozenset({"gzip"}),
    "application/x-gzip": frozenset({"gzip"}),
    "application/x-tar": frozenset({"tar"}),
    "application/x-rar-compressed": frozenset({"rar"}),
    "application/vnd.rar": frozenset({"rar"}),
    "application/x-7z-compressed": frozenset({"7z"}),
    "application/msword": frozenset({"ole", "rtf"}),
    "application/vnd.ms-excel": frozenset({"ole"}),
    "application/vnd.ms-powerpoint": frozenset({"ole"}),
    "application/rtf": frozenset({"rtf"}),
    "text/html": frozenset({"html"}),
    "text/plain": frozenset({"", "html", "script"}),
}
_OOXML = frozenset({"zip"})
_BY_EXT: dict[str, frozenset[str]] = {
    "pdf": frozenset({"pdf"}),
    "jpg": frozenset({"jpeg"}),
    "jpeg": frozenset({"jpeg"}),
    "png": frozenset({"png"}),
    "gif": frozenset({"gif"}),
    "zip": frozenset({"zip"}),
    "gz": frozenset({"gzip"}),
    "tgz": frozenset({"gzip"}),
    "tar": frozenset({"tar"}),
    "rar": frozenset({"rar"}),
    "7z": frozenset({"7z"}),
    "doc": frozenset({"ole", "rtf"}),
    "xls": frozenset({"ole"}),
    "ppt": frozenset({"ole"}),
    "rtf": frozenset({"rtf"}),
    "docx": _OOXML,
    "xlsx": _OOXML,
    "pptx": _OOXML,
    "odt": _OOXML,
    "ods": _OOXML,
    "txt": frozenset({"", "html", "script"}),
}


def detect(data: bytes) -> str:
    """The kind of ``data`` from its first bytes; ``""`` when no signature matches."""
    head = data[:1024]
    if data.startswith(b"MZ"):
        return "pe" if _is_pe(data) else ""
    for offset, sig, kind in SIGNATURES:
        if data.startswith(sig, offset):
            return kind
    if b"%PDF-" in head:  # readers accept junk before the header
        return "pdf"
    start = head.lstrip()[:15].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    return ""


def _is_pe(data: bytes) -> bool:
    """``MZ`` is two letters of text too: require the PE header it points to, or the DOS stub's
    usual bytes when the sample is too short to hold it."""
    if len(data) >= 64:
        offset = int.from_bytes(data[60:64], "little")
        if data.startswith(b"PE\x00\x00", offset):
            return True
    return data[2:4] in (b"\x90\x00", b"P\x00")


def extension(filename: str) -> str:
    """The last extension, lower case, trailing dots and spaces ignored (``"a.PDF. "`` -> ``pdf``)."""
    name = filename.strip().rstrip(". ").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    return name.rsplit(".", 1)[1].strip().lower() if "." in name else ""


def expected(ctype: str, filename: str) -> tuple[str, frozenset[str]] | None:
    """What the declaration says (the extension first, then the MIME type) and the kinds it
    allows; None when it says nothing checkable (``application/octet-stream``, an unknown
    extension)."""
    ext = extension(filename)
    if ext in _BY_EXT:
        return ext, _BY_EXT[ext]
    if ctype in _BY_TYPE:
        return ctype, _BY_TYPE[ctype]
    return None


def contradicts(kind: str, ctype: str, filename: str) -> str:
    """The declaration ``kind`` contradicts (``"pdf"``, ``"image/png"``), or ``""``."""
    if not kind:
        return ""
    found = expected(ctype, filename)
    return found[0] if found is not None and kind not in found[1] else ""
