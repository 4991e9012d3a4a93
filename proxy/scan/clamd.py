"""clamd's INSTREAM command (ClamAV's ``clamd``, TCP or Unix socket).

``zINSTREAM\\0``, then the message in chunks ``<4-byte big-endian length><data>``, then a zero
length; clamd answers one NUL-terminated line and closes: ``stream: OK``,
``stream: <virus name> FOUND``, or ``... ERROR`` (``INSTREAM size limit exceeded. ERROR``
when the stream is larger than its ``StreamMaxLength``: raised as ``too_big``).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from proxy.scan.base import ScanError, Scanner, read_line

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClamdAnswer:
    infected: bool
    name: str = ""  # the signature's name when infected


def parse_answer(raw: bytes) -> ClamdAnswer:
    text = raw.rstrip(b"\0\n").decode("utf-8", "replace").strip()
    if text.endswith(" FOUND"):
        name = text.removesuffix(" FOUND").partition(": ")[2].strip()
        return ClamdAnswer(True, name or "unknown")
    if text.endswith(": OK") or text == "OK":
        return ClamdAnswer(False)
    if "size limit exceeded" in text:
        raise ScanError("too_big", text)
    if text.endswith("ERROR"):
        raise ScanError("refused", text[:200])
    raise ScanError("protocol", f"unexpected answer {text[:200]!r}")


class Clamd(Scanner):
    name = "clamav"
    default_port = 3310

    async def scan(self, data: bytes | memoryview) -> ClamdAnswer:
        view = memoryview(data)

        async def op(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ClamdAnswer:
            writer.write(b"zINSTREAM\0")
            try:
                for i in range(0, len(view), CHUNK):
                    piece = view[i : i + CHUNK]
                    writer.write(struct.pack(">I", len(piece)))
                    writer.write(piece)
                    await writer.drain()
                writer.write(b"\0\0\0\0")
                await writer.drain()
            except ConnectionError:
                pass  # clamd stops reading past StreamMaxLength: its answer says so
            return parse_answer(await read_line(reader, b"\0"))

        return await self.exchange(op)

    async def ping(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"zPING\0")
        await writer.drain()
        return await reader.readuntil(b"\0") == b"PONG\0"
