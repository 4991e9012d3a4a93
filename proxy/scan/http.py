"""The least of HTTP/1.1 a scanner client needs: one request per connection, bounded answers.

Written here rather than taken from aiohttp or httpx: spamgate speaks HTTP to one server
(rspamd's ``/checkv2`` and ``/ping``), one POST a message, with ``Connection: close``; the
answer is a status line, headers and a body of ``Content-Length`` or chunked. Both libraries
bring a dependency tree larger than this module, and httpx's cancel scopes (anyio) bind to
the current task, which a check's first steps do not run as (:mod:`proxy.eager`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.scan.base import ScanError, read_line

MAX_HEADERS = 64


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def request(method: str, path: str, host: str, headers: list[tuple[str, str]], body_length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if method == "POST":
        lines.append(f"Content-Length: {body_length}")
    for name, value in headers:
        lines.append(f"{name}: {clean(value)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


def clean(value: str, limit: int = 1000) -> str:
    """A header value from the SMTP session: no control characters, bounded."""
    return "".join(c if c.isprintable() else " " for c in value)[:limit]


async def read_response(reader: asyncio.StreamReader, max_body: int) -> Response:
    status_line = (await read_line(reader)).decode("latin-1").strip()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ScanError("protocol", f"not an HTTP answer: {status_line[:120]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = (await read_line(reader)).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ScanError("protocol", "too many header lines")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _chunked(reader, max_body)
    elif (length := headers.get("content-length", "")).isdigit():
        if int(length) > max_body:
            raise ScanError("protocol", f"answer of {length} bytes is over {max_body}")
        body = await reader.readexactly(int(length))
    else:
        body = await reader.read(max_body + 1)
        if len(body) > max_body:
            raise ScanError("protocol", f"answer over {max_body} bytes")
    return Response(int(parts[1]), headers, body)


async def _chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    out = bytearray()
    while True:
        size_line = (await read_line(reader)).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ScanError("protocol", "bad chunk size") from None
        if size == 0:
            while (await read_line(reader)).strip():  # trailers
                pass
            return bytes(out)
        if len(out) + size > max_body:
            raise ScanError("protocol", f"answer over {max_body} bytes")
        out += await reader.readexactly(size)
        await reader.readexactly(2)
