"""The little HTTP the admin listener speaks: one bounded request in, one response out.

Requests are read with timeouts and limits (request line and each header 8 KiB, at most 100
headers, a body only with Content-Length and at most ``MAX_BODY``); anything else is a 4xx.
Every console response carries the security headers (:data:`SECURITY_HEADERS`): a strict
Content-Security-Policy (only this listener's own scripts, styles and images; no inline
script), no framing, no sniffing, no referrer, no caching.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass, field

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 2 * 1024 * 1024
TIMEOUT = 10.0

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REASONS = {
    200: "OK",
    303: "See Other",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    remote: str = ""  # the client address of the HTTP connection

    @property
    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                out[name] = value
        return out

    def form(self) -> dict[str, str]:
        """The url-encoded form of a POST (the last value of a repeated field)."""
        if not self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {}
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)

    def encode(self, head_only: bool = False) -> bytes:
        lines = [
            f"HTTP/1.0 {self.status} {REASONS.get(self.status, '')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines += [f"Set-Cookie: {c}" for c in self.cookies]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def redirect(location: str) -> Response:
    return Response(303, b"", headers={"Location": location})


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), TIMEOUT)
    except asyncio.LimitOverrunError as exc:
        raise HttpError(400, "line too long") from exc
    except asyncio.IncompleteReadError as exc:
        raise HttpError(400, "incomplete request") from exc
    if len(line) > MAX_LINE:
        raise HttpError(400, "line too long")
    return line


async def read_request(reader: asyncio.StreamReader) -> Request:
    parts = (await _line(reader)).decode("latin-1").split()
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("HTTP/")):
        raise HttpError(400, "bad request line")
    method, target = parts[0], parts[1]
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader)
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpError(400, "bad header")
        headers[name.strip().lower()] = value.strip()
    else:
        raise HttpError(400, "too many headers")
    body = b""
    if "content-length" in headers:
        try:
            size = int(headers["content-length"])
        except ValueError as exc:
            raise HttpError(400, "bad Content-Length") from exc
        if size < 0 or size > MAX_BODY:
            raise HttpError(413, "request too large")
        try:
            body = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            raise HttpError(400, "incomplete body") from exc
    elif "transfer-encoding" in headers:
        raise HttpError(400, "chunked bodies are not accepted")
    split = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
    return Request(method, urllib.parse.unquote(split.path) or "/", query, headers, body)
