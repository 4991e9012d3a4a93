"""rspamd's HTTP protocol: ``POST /checkv2`` with the message and the SMTP envelope.

The envelope goes in request headers so rspamd sees the real transaction, not spamgate: ``Ip``
(the client), ``Helo``, ``From`` (MAIL FROM), ``Rcpt`` (once per accepted recipient),
``Hostname`` (the client's verified reverse name, or ``unknown``) and ``Queue-Id`` (the
transaction's ref, so both logs carry the same id). The JSON answer gives the action
(``no action``, ``greylist``, ``add header``, ``rewrite subject``, ``soft reject``,
``reject``), the score, the symbols with their scores and options, and under ``milter`` the
headers rspamd would add and those it would remove (name -> which instance: 0 all, n the n-th,
-n the n-th from the end).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.scan import http
from proxy.scan.base import ScanError, Scanner

MAX_ANSWER = 4 * 1024 * 1024
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field-name: printable, no colon


@dataclass(frozen=True, slots=True)
class RspamdSymbol:
    name: str
    score: float
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RspamdAnswer:
    action: str
    score: float
    required: float
    symbols: tuple[RspamdSymbol, ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[tuple[str, int], ...] = ()
    message: str = ""  # rspamd's smtp_message, if any
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Envelope:
    ip: str
    helo: str = ""
    mail_from: str = ""
    rcpts: tuple[str, ...] = ()
    hostname: str = ""
    queue_id: str = ""

    def headers(self) -> list[tuple[str, str]]:
        out = [("Ip", self.ip)]
        if self.helo:
            out.append(("Helo", self.helo))
        out.append(("From", f"<{self.mail_from}>"))
        out += [("Rcpt", f"<{r}>") for r in self.rcpts]
        out.append(("Hostname", self.hostname or "unknown"))
        if self.queue_id:
            out.append(("Queue-Id", self.queue_id))
        return out


def _headers(milter: Any) -> tuple[tuple[str, str], ...]:
    """``milter.add_headers``: name -> value, {value, order} or a list of those."""
    if not isinstance(milter, dict) or not isinstance(milter.get("add_headers"), dict):
        return ()
    out: list[tuple[str, str]] = []
    for name, spec in milter["add_headers"].items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            continue
        for item in spec if isinstance(spec, list) else [spec]:
            value = item.get("value") if isinstance(item, dict) else item
            if isinstance(value, str):
                out.append((name, value))
    return tuple(out[:20])


def _removals(milter: Any) -> tuple[tuple[str, int], ...]:
    """``milter.remove_headers``: name -> instance (0 every one, n the n-th, -n from the end)."""
    if not isinstance(milter, dict) or not isinstance(milter.get("remove_headers"), dict):
        return ()
    out: list[tuple[str, int]] = []
    for name, order in milter["remove_headers"].items():
        if isinstance(name, str) and _FIELD_NAME.match(name) and type(order) is int:
            out.append((name, order))
    return tuple(out[:20])


def parse_answer(body: bytes) -> RspamdAnswer:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ScanError("protocol", f"answer is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise ScanError("protocol", "answer has no action")
    symbols = []
    raw = data.get("symbols")
    for name, sym in raw.items() if isinstance(raw, dict) else ():
        if not isinstance(sym, dict):
            continue
        opts = sym.get("options")
        options = tuple(str(o) for o in opts) if isinstance(opts, list) else ()
        symbols.append(RspamdSymbol(str(name), float(sym.get("score") or 0.0), options))
    messages = data.get("messages")
    message = messages.get("smtp_message", "") if isinstance(messages, dict) else ""
    return RspamdAnswer(
        action=data["action"],
        score=float(data.get("score") or 0.0),
        required=float(data.get("required_score") or 0.0),
        symbols=tuple(symbols),
        add_headers=_headers(data.get("milter")),
        remove_headers=_removals(data.get("milter")),
        message=message if isinstance(message, str) else "",
        skipped=bool(data.get("is_skipped")),
    )


class Rspamd(Scanner):
    name = "rspamd"
    default_port = 11333

    async def check(self, message: bytes | memoryview, envelope: Envelope) -> RspamdAnswer:
        host = str(self.endpoint) if not self.endpoint.path else "localhost"
        head = http.request("POST", "/checkv2", host, envelope.headers(), len(message))

        async def op(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RspamdAnswer:
            writer.write(head)
            writer.write(message)
            await writer.drain()
            response = await http.read_response(reader, MAX_ANSWER)
            if response.status != 200:
                text = response.body[:200].decode("utf-8", "replace")
                raise ScanError("refused", f"HTTP {response.status}: {text}")
            return parse_answer(response.body)

        return await self.exchange(op)

    async def ping(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(http.request("GET", "/ping", "localhost", [], 0))
        await writer.drain()
        response = await http.read_response(reader, 1024)
        return response.status == 200 and response.body.strip() == b"pong"
