"""One pass over a message for every content check: MIME walk, links, attachments.

:func:`analyse` is pure CPU work on bytes (no I/O, no logging), so the checks' layer may run it
inline for a small message or in a thread for a large one. Its result, :class:`Content`, holds
facts only; the checks turn them into symbols:

- ``mime``: the walk (:mod:`proxy.content.mime`) and its ``problems``;
- ``links``: every link and host of the text and HTML parts (:mod:`proxy.content.urls`),
  duplicates removed (by host and source), at most ``Bounds.max_links``;
- ``forms``: the ``action`` of each HTML form;
- ``attachments``: each attachment's name, declared type, magic kind
  (:mod:`proxy.content.magic`) and, for archives, their members (:mod:`proxy.content.archives`).

Text parts are decoded with their charset and scanned up to ``Bounds.max_text`` characters
per message (``truncated`` says when the rest was not scanned). The decoded bodies are dropped
once read: the result kept in the transaction holds facts, not a second copy of the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.content import archives, magic, mime, urls

__all__ = ["Attachment", "Bounds", "Content", "analyse"]


@dataclass(frozen=True, slots=True)
class Bounds:
    mime: mime.Limits = mime.Limits()
    max_text: int = 1024 * 1024
    max_links: int = 1000
    archive_depth: int = 3
    archive_bytes: int = 10 * 1024 * 1024
    archive_members: int = 1000


@dataclass(slots=True)
class Attachment:
    filename: str
    ctype: str
    kind: str  # magic of the decoded content ("" when unknown or not decoded)
    size: int
    decoded: bool
    listing: archives.Listing | None = None


@dataclass(slots=True)
class Content:
    mime: mime.Mime
    links: list[urls.Link] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    truncated: str = ""  # why some text was not scanned for links
    skipped: str = ""  # set when the message was not analysed at all (no thread free)


def _text(part: mime.Part) -> str:
    assert part.body is not None
    charset = part.params.get("charset", "utf-8").strip().lower() or "utf-8"
    try:
        return part.body.decode(charset, "replace")
    except LookupError:
        return part.body.decode("latin-1")


def analyse(message: bytes, bounds: Bounds = Bounds()) -> Content:
    walked = mime.walk(message, bounds.mime)
    out = Content(walked)
    seen: set[tuple[str, str, str]] = set()
    text_left = bounds.max_text
    budget = archives.Budget(bounds.archive_depth, bounds.archive_bytes, bounds.archive_members)
    for part in walked.parts:
        if part.body is None:
            continue
        if part.ctype in ("text/plain", "text/html") and not (part.filename and part.ctype == "text/plain"):
            if text_left <= 0:
                out.truncated = f"text>{bounds.max_text}"
            else:
                text = _text(part)[:text_left]
                text_left -= len(text)
                if part.ctype == "text/html":
                    found, forms = urls.from_html(text)
                    out.forms += forms
                else:
                    found = urls.from_text(text)
                for link in found:
                    key = (link.host, link.source, link.text_host)
                    if key not in seen and len(seen) < bounds.max_links:
                        seen.add(key)
                        out.links.append(link)
        if not part.is_attachment:
            continue
        kind = magic.detect(part.body)
        att = Attachment(part.filename, part.ctype, kind, len(part.body), True)
        name = part.filename or f"({part.ctype})"
        if kind in ("zip", "tar", "gzip"):
            att.listing = archives.inspect(part.body, kind, name, budget)
        elif kind in magic.ARCHIVES:  # rar, 7z, cab...: recognised, not opened
            att.listing = archives.Listing(problems=[f"{name}:{kind} not opened"])
        out.attachments.append(att)
    for part in walked.parts:
        if part.body is None and part.is_attachment:
            out.attachments.append(Attachment(part.filename, part.ctype, "", part.size, False))
        part.body = None  # the facts are extracted: the transaction keeps no decoded copy
    return out
