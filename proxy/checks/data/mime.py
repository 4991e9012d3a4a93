"""MIME structure (DATA stage), and the bounds of the one parse every content check shares.

The message is walked once per transaction (:mod:`proxy.checks.contentutil`) within this
section's bounds; what the walk found wrong becomes a symbol:

- ``MIME_TOO_MANY_PARTS{>max}``: more entities than ``max_parts`` (the rest is not inspected);
- ``MIME_TOO_DEEP{>max}``: multiparts or attached messages nested deeper than ``max_depth``;
- ``MIME_BAD_BOUNDARY{why}``: a multipart without a boundary parameter, a boundary that never
  occurs, or no closing delimiter;
- ``MIME_DECODE_LIMIT{>max}``: parts past ``max_decoded_size`` were not decoded (not inspected);
- ``MIME_UNCHECKED{why}``: the message was not analysed (every content thread busy); weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Stage, Symbol, SymbolDef
from proxy.checks.contentutil import content
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

MIME_TOO_MANY_PARTS = SymbolDef(
    "MIME_TOO_MANY_PARTS",
    "The message has more MIME parts than checks.mime.max_parts (a MIME bomb); the rest was not inspected.",
    score=6.0,
    remedy="Send fewer parts: split the attachments over several messages.",
)
MIME_TOO_DEEP = SymbolDef(
    "MIME_TOO_DEEP",
    "MIME parts or attached messages are nested deeper than checks.mime.max_depth.",
    score=6.0,
    remedy="Do not nest forwarded messages this deep; attach them side by side.",
)
MIME_BAD_BOUNDARY = SymbolDef(
    "MIME_BAD_BOUNDARY",
    "A multipart has no boundary, its boundary never occurs, or its closing delimiter is missing.",
    score=2.0,
    remedy="Fix the sending software: RFC 2046 5.1.1 multipart delimiters.",
)
MIME_DECODE_LIMIT = SymbolDef(
    "MIME_DECODE_LIMIT",
    "Parts past checks.mime.max_decoded_size were not decoded, so not inspected.",
    score=1.0,
    remedy="Send large files another way (a link to a file share).",
)
MIME_UNCHECKED = SymbolDef(
    "MIME_UNCHECKED",
    "The content was not analysed: every content thread stayed busy (evidence: why). Neither good nor bad.",
    score=0.0,
    remedy="Nothing for the sender; the receiving site is overloaded.",
)


@dataclass(frozen=True, slots=True)
class MimeOptions(BaseOptions):
    max_parts: int = opt(1000, "MIME entities walked per message (multiparts included).", minimum=1)
    max_depth: int = opt(16, "Nesting of multiparts and attached messages walked.", minimum=1)
    max_decoded_size: int = opt(
        "16M",
        "Bytes decoded (base64, quoted-printable) per message; later parts are not inspected.",
        kind="size",
    )
    max_text_size: int = opt("1M", "Characters of text and HTML scanned for links per message.", kind="size")
    max_links: int = opt(
        1000, "Distinct links kept per message (URI lists look up fewer: uribl.max_lookups)."
    )
    thread_above: int = opt(
        "128K",
        "Messages this large are analysed in the content thread pool instead of on the event loop.",
        kind="size",
    )
    threads: int = opt(
        2, "Threads of the content pool (its own: no other check family waits behind it).", minimum=1
    )
    thread_wait: float = opt(
        "1s",
        "When every content thread is busy, how long to wait for one before giving up (MIME_UNCHECKED).",
        kind="duration",
    )


class MimeStructure(Check):
    name = "mime"
    stage = Stage.DATA
    symbols = (MIME_TOO_MANY_PARTS, MIME_TOO_DEEP, MIME_BAD_BOUNDARY, MIME_DECODE_LIMIT, MIME_UNCHECKED)
    Options = MimeOptions
    description = "MIME structure; its bounds apply to the one parse all content checks share."
    io = True  # a large message is analysed in a thread

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        found = await content(ctx, self.services)
        if found.skipped:
            return [MIME_UNCHECKED.hit(found.skipped)]
        problems = found.mime.problems
        out = []
        for key, sym in (
            ("too_many_parts", MIME_TOO_MANY_PARTS),
            ("too_deep", MIME_TOO_DEEP),
            ("bad_boundary", MIME_BAD_BOUNDARY),
            ("decode_limit", MIME_DECODE_LIMIT),
        ):
            if key in problems:
                out.append(sym.hit(problems[key]))
        return out
