"""SpamAssassin's ``spamd`` over the SPAMC/SPAMD protocol (version 1.5).

Request: ``SYMBOLS SPAMC/1.5\\r\\nContent-length: N\\r\\n[User: name\\r\\n]\\r\\n<message>``.
Answer: ``SPAMD/1.1 0 EX_OK``, headers (``Spam: True ; 1003.3 / 5.0``, ``Content-length``),
an empty line and the names of the rules that hit, comma-separated. A non-zero status
(``SPAMD/1.0 76 Bad header line``) is ``refused``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from proxy.scan.base import ScanError, Scanner, read_line

_SPAM = re.compile(r"^(true|false|yes|no)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)\s*$", re.IGNORECASE)
_RULE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class SpamdAnswer:
    spam: bool
    score: float
    threshold: float
    rules: tuple[str, ...] = ()


def request(message: bytes | memoryview, user: str = "") -> bytes:
    head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(message)}\r\n"
    if user:
        head += f"User: {user}\r\n"
    return (head + "\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> SpamdAnswer:
    status = (await read_line(reader)).decode("latin-1").strip()
    parts = status.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("SPAMD/"):
        raise ScanError("protocol", f"unexpected status line {status[:120]!r}")
    if parts[1] != "0":
        raise ScanError("refused", status[:200])
    headers: dict[str, str] = {}
    for _ in range(32):
        line = (await read_line(reader)).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ScanError("protocol", "too many header lines")
    m = _SPAM.match(headers.get("spam", ""))
    if m is None:
        raise ScanError("protocol", f"no Spam header in {headers!r}"[:200])
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) <= MAX_BODY:
        body = await reader.readexactly(int(length))
    else:
        body = await reader.read(MAX_BODY)
    rules = tuple(r for r in (x.strip() for x in body.decode("latin-1").split(",")) if _RULE.match(r))
    return SpamdAnswer(m.group(1).lower() in ("true", "yes"), float(m.group(2)), float(m.group(3)), rules)


class Spamd(Scanner):
    name = "spamassassin"
    default_port = 783

    def __init__(self, address: str, *, timeout: float, max_connections: int, user: str = "") -> None:
        super().__init__(address, timeout=timeout, max_connections=max_connections)
        self.user = user

    async def check(self, message: bytes | memoryview) -> SpamdAnswer:
        async def op(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> SpamdAnswer:
            writer.write(request(message, self.user))
            writer.write(message)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            return await read_answer(reader)

        return await self.exchange(op)

    async def ping(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"PING SPAMC/1.5\r\n\r\n")
        await writer.drain()
        line = await reader.readline()
        return line.startswith(b"SPAMD/") and b" 0 PONG" in line
