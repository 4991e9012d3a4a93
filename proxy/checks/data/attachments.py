"""Attachment policy (DATA stage): dangerous file types, disguises and archives that hide them.

From the shared analysis (:mod:`proxy.checks.contentutil`), for every attachment:

- ``ATTACH_BAD_EXTENSION{name}``: its extension is on the dangerous list (``extensions``, plus
  the site's ``extra_extensions``, minus ``allow_extensions``); rejected by default.
- ``ATTACH_EXECUTABLE{name:kind}``: its first bytes are a program (PE, ELF, Mach-O, Windows
  shortcut) whatever its name says; rejected by default.
- ``ATTACH_DOUBLE_EXT{name}``: a document-looking extension before a dangerous one
  (``invoice.pdf.exe``, also ``invoice.pdf      .exe``).
- ``ATTACH_TYPE_MISMATCH{name:declared->kind}``: the declared type or extension contradicts the
  magic bytes (a ``.pdf`` or ``image/jpeg`` that is a zip or a program).
- ``ATTACH_ARCHIVE_BAD{archive/path}``: a zip, tar or gzip (nested ones too) holds a file with
  a dangerous extension or a program's bytes; rejected by default.
- ``ATTACH_ARCHIVE_ENCRYPTED{name}``: an archive with encrypted members (scanners cannot look
  inside; a classic way to deliver malware with the password in the text).
- ``ATTACH_ARCHIVE_UNCHECKED{name:why}``: an archive not fully inspected (rar, 7z... are not
  opened; deeper than ``archive_depth``, larger than ``archive_max_size``, more than
  ``archive_max_members`` members, corrupt).

Evidence is the file name with control characters replaced and cut to 80 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.contentutil import content
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt
from proxy.content.magic import EXECUTABLES, contradicts, extension

# Programs, scripts and shortcuts Windows runs on a double click, and disk images it mounts.
DANGEROUS = [
    "ade",
    "adp",
    "app",
    "appx",
    "appxbundle",
    "application",
    "bas",
    "bat",
    "chm",
    "cmd",
    "com",
    "cpl",
    "dll",
    "exe",
    "gadget",
    "hta",
    "img",
    "inf",
    "ins",
    "iso",
    "isp",
    "jar",
    "jnlp",
    "js",
    "jse",
    "lnk",
    "mde",
    "msc",
    "msi",
    "msix",
    "msp",
    "mst",
    "pif",
    "ps1",
    "psc1",
    "psm1",
    "reg",
    "scf",
    "scr",
    "sct",
    "shb",
    "shs",
    "sys",
    "url",
    "vb",
    "vbe",
    "vbs",
    "vhd",
    "vhdx",
    "wsc",
    "wsf",
    "wsh",
    "xll",
]
# Extensions a sender puts before the real one to make a program look like a document.
DECOYS = frozenset(
    [
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "odt",
        "rtf",
        "txt",
        "csv",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "zip",
        "rar",
        "htm",
        "html",
        "mp3",
        "mp4",
        "wav",
        "avi",
        "mov",
        "eml",
        "msg",
    ]
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f{}]")

ATTACH_BAD_EXTENSION = SymbolDef(
    "ATTACH_BAD_EXTENSION",
    "An attachment has a dangerous file extension (checks.attachments.extensions).",
    score=10.0,
    action="reject",
    reply="554 5.7.1 Message refused: attachment type not allowed",
    remedy="Do not e-mail programs or scripts; put them in an archive on a file share and send a link.",
)
ATTACH_EXECUTABLE = SymbolDef(
    "ATTACH_EXECUTABLE",
    "An attachment is a program by its content (PE, ELF, Mach-O, Windows shortcut), whatever its name.",
    score=10.0,
    action="reject",
    reply="554 5.7.1 Message refused: executable content not allowed",
    remedy="Do not e-mail programs; send a link to a file share.",
)
ATTACH_DOUBLE_EXT = SymbolDef(
    "ATTACH_DOUBLE_EXT",
    "An attachment name hides a dangerous extension behind a document one (invoice.pdf.exe).",
    score=4.0,
    remedy="Name files with their real extension only.",
)
ATTACH_TYPE_MISMATCH = SymbolDef(
    "ATTACH_TYPE_MISMATCH",
    "An attachment's declared type or extension contradicts its content (evidence name:declared->found).",
    score=3.0,
    remedy="Send files with their real type and extension; fix the sending software's MIME types.",
)
ATTACH_ARCHIVE_BAD = SymbolDef(
    "ATTACH_ARCHIVE_BAD",
    "An archive attachment (zip, tar, gzip, nested too) holds a program or a dangerous file type.",
    score=10.0,
    action="reject",
    reply="554 5.7.1 Message refused: archive contains a forbidden file type",
    remedy="Do not e-mail programs, even in archives; send a link to a file share.",
)
ATTACH_ARCHIVE_ENCRYPTED = SymbolDef(
    "ATTACH_ARCHIVE_ENCRYPTED",
    "An archive attachment has encrypted members: no filter can see what they are.",
    score=3.0,
    remedy="Share confidential files through a file share, or encrypt with S/MIME or PGP.",
)
ATTACH_ARCHIVE_UNCHECKED = SymbolDef(
    "ATTACH_ARCHIVE_UNCHECKED",
    "An archive could not be fully inspected (too deep, too large, too many members, corrupt).",
    score=1.0,
    remedy="Send flatter, smaller archives.",
)


@dataclass(frozen=True, slots=True)
class AttachmentsOptions(BaseOptions):
    extensions: list[str] = opt(
        DANGEROUS, "Dangerous file extensions (without the dot): ATTACH_BAD_EXTENSION."
    )
    extra_extensions: list[str] = opt([], "The site's own additions to the dangerous extensions.")
    allow_extensions: list[str] = opt(
        [], "Extensions never treated as dangerous (removed from the lists above)."
    )
    archive_depth: int = opt(3, "Archives inside archives opened, in levels.", minimum=1)
    archive_max_size: int = opt(
        "10M", "Bytes decompressed from archives per message (in memory, never to disk).", kind="size"
    )
    archive_max_members: int = opt(1000, "Members listed per archive.", minimum=1)


def _ev(name: str) -> str:
    return _CONTROL.sub("?", name)[:80] or "(unnamed)"


class Attachments(Check):
    name = "attachments"
    stage = Stage.DATA
    symbols = (
        ATTACH_BAD_EXTENSION,
        ATTACH_EXECUTABLE,
        ATTACH_DOUBLE_EXT,
        ATTACH_TYPE_MISMATCH,
        ATTACH_ARCHIVE_BAD,
        ATTACH_ARCHIVE_ENCRYPTED,
        ATTACH_ARCHIVE_UNCHECKED,
    )
    Options = AttachmentsOptions
    description = "Dangerous attachments: extensions, double extensions, magic bytes, archive members."
    io = True  # awaits the shared analysis, which may run in a thread

    def __init__(self, options: AttachmentsOptions, services: Services) -> None:
        super().__init__(options, services)
        allow = {e.lower().lstrip(".") for e in options.allow_extensions}
        self.bad = {e.lower().lstrip(".") for e in [*options.extensions, *options.extra_extensions]} - allow

    def _double(self, name: str) -> bool:
        stem = name.strip().rstrip(". ")
        if extension(stem) not in self.bad:
            return False
        inner = extension(stem.rsplit(".", 1)[0])
        return inner in DECOYS

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        found = await content(ctx, self.services)
        hits: dict[str, list[str]] = {}

        def add(sym: SymbolDef, evidence: str) -> None:
            items = hits.setdefault(sym.name, [])
            if evidence not in items and len(items) < 5:
                items.append(evidence)

        for att in found.attachments:
            name = att.filename
            if name and extension(name) in self.bad:
                add(ATTACH_BAD_EXTENSION, _ev(name))
            if name and self._double(name):
                add(ATTACH_DOUBLE_EXT, _ev(name))
            if att.kind in EXECUTABLES:
                add(ATTACH_EXECUTABLE, f"{_ev(name)}:{att.kind}")
            declared = contradicts(att.kind, att.ctype, name)
            if declared:
                add(ATTACH_TYPE_MISMATCH, f"{_ev(name)}:{declared}->{att.kind}")
            listing = att.listing
            if listing is None:
                continue
            for m in listing.members:
                if extension(m.name) in self.bad or m.kind in EXECUTABLES:
                    add(ATTACH_ARCHIVE_BAD, _ev(m.path))
                if self._double(m.name):
                    add(ATTACH_DOUBLE_EXT, _ev(m.path))
            if listing.encrypted:
                add(ATTACH_ARCHIVE_ENCRYPTED, _ev(name))
            for problem in listing.problems:
                add(ATTACH_ARCHIVE_UNCHECKED, _ev(problem))
        by_name = {s.name: s for s in self.symbols}
        return [by_name[n].hit(",".join(ev)) for n, ev in hits.items()]
