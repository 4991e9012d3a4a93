"""The downstream LMTP session (RFC 2033), on asyncio streams: LHLO, and a reply per recipient.

aiosmtplib has no LHLO, and LMTP's end of data differs from SMTP's (one reply per accepted
recipient), so this is a small client of its own with the same discipline as
:mod:`proxy.relay.smtp`: the :class:`State` is set *before* each command is written and moved
on only by its reply(ies); ``busy`` is True while a reply is outstanding; a timeout, a lost
connection, a malformed reply or a cancellation in that window aborts the connection on the
spot (``BROKEN``), so a late reply can never be paired with a later command.

An SMTP client gets one reply to DATA, so the session layer gives an LMTP transaction one
recipient (docs/ROUTING.md); :meth:`LmtpDownstream.data` still reads every recipient's reply
(the session is idle only then) and returns the first refusal, else the first reply.
After the per-recipient replies the LMTP transaction is over whatever they said (RFC 2033
4.2), so the session is ``IDLE`` again without RSET. No XCLIENT: LMTP is final delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from proxy.config.fields import parse_hostport
from proxy.config.schema import RelayConfig
from proxy.relay.base import ClientIdentity
from proxy.relay.encode import MAIL_PARAM_EXT, RCPT_PARAM_EXT, dot_stuff, params_for
from proxy.relay.smtp import State, _temporary
from proxy.replies import (
    DOWNSTREAM_LOST,
    DOWNSTREAM_NO_SMTPUTF8,
    DOWNSTREAM_UNAVAILABLE,
    Reply,
    from_downstream,
)

T = TypeVar("T")
MAX_REPLY_LINES = 100


class _Lost(Exception):
    """A reply never came or made no sense: the session is broken (already aborted)."""


class LmtpDownstream:
    def __init__(self, cfg: RelayConfig, helo_name: str, address: str) -> None:
        self.cfg = cfg
        self.address = address
        self.host, self.port = parse_hostport(address, "relay.routes.downstreams")
        self.helo_name = helo_name
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.caps: frozenset[str] = frozenset()
        self.state = State.CLOSED
        self.busy = False
        self.uses = 0
        self.reused = False
        self.rcpts = 0  # recipients the LMTP server accepted in this transaction

    @property
    def capabilities(self) -> frozenset[str]:
        return self.caps

    @property
    def alive(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    @property
    def idle(self) -> bool:
        return self.state is State.IDLE and not self.busy and self.alive

    # -- the wire -------------------------------------------------------------------------------

    async def _read_reply(self, wait: float) -> tuple[int, str]:
        reader = self.reader
        if reader is None:
            raise _Lost("not connected")
        texts: list[str] = []
        async with asyncio.timeout(wait):
            while len(texts) < MAX_REPLY_LINES:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise _Lost("connection closed")
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
                    raise _Lost(f"malformed reply {text[:80]!r}")
                texts.append(text[4:])
                if text[3:4] != "-":
                    return int(text[:3]), "\n".join(texts)
        raise _Lost("reply too long")

    async def _exchange(self, state: State, step: Awaitable[T]) -> T:
        """``state`` set before the write; anything but a reply aborts (see the module doc)."""
        self.state = state
        self.busy = True
        try:
            result = await step
        except BaseException as exc:
            self._abort()
            if not isinstance(exc, Exception):
                raise
            raise _Lost(repr(exc)) from exc
        self.busy = False
        return result

    async def _command(self, state: State, line: bytes, wait: float = 0.0) -> tuple[int, str]:
        async def step() -> tuple[int, str]:
            assert self.writer is not None
            self.writer.write(line + b"\r\n")
            return await self._read_reply(wait or self.cfg.command_timeout)

        return await self._exchange(state, step())

    def _abort(self) -> None:
        self.state = State.BROKEN
        self.busy = False
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.transport.abort()

    # -- opening --------------------------------------------------------------------------------

    async def open(self) -> Reply | None:
        if self.alive and self.state is not State.BROKEN:
            return None
        await self.close()
        try:
            async with asyncio.timeout(self.cfg.connect_timeout):
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                code, _ = await self._read_reply(self.cfg.connect_timeout)
            if code != 220:
                raise _Lost(f"greeting {code}")
            code, text = await self._command(State.IDLE, b"LHLO " + self.helo_name.encode())
            if code != 250:
                raise _Lost(f"LHLO {code}")
        except (OSError, TimeoutError, _Lost):
            self._abort()
            self.state = State.CLOSED
            return DOWNSTREAM_UNAVAILABLE
        except BaseException:
            self._abort()
            raise
        self.caps = frozenset(ln.split(maxsplit=1)[0].lower() for ln in text.split("\n")[1:] if ln)
        self.state = State.IDLE
        return None

    # -- the transaction ------------------------------------------------------------------------

    async def mail(self, sender: str, params: dict[str, str | None], identity: ClientIdentity) -> Reply:
        if self.reused:  # a pooled session the server may have closed while idle: retry once
            self.reused = False
            reply = await self._mail(sender, params)
            if reply is not DOWNSTREAM_LOST:
                return reply
        return await self._mail(sender, params)

    async def _mail(self, sender: str, params: dict[str, str | None]) -> Reply:
        if self.state is State.MAIL and not self.busy:
            await self.rset()
        failure = await self.open()
        if failure is not None:
            return failure
        if not self.idle:
            self._abort()
            return DOWNSTREAM_LOST
        if params.get("SMTPUTF8", "") is None and "smtputf8" not in self.caps:
            return DOWNSTREAM_NO_SMTPUTF8
        arg = b" ".join(
            [
                b"MAIL FROM:<" + sender.encode("utf-8", "surrogateescape") + b">",
                *params_for(params, MAIL_PARAM_EXT, self.caps),
            ]
        )
        try:
            code, text = await self._command(State.MAIL, arg)
        except _Lost:
            return DOWNSTREAM_LOST
        self.rcpts = 0
        if code != 250:
            self.state = State.IDLE
        return self._reply(code, text)

    async def rcpt(self, rcpt: str, params: dict[str, str | None]) -> Reply:
        if self.state is not State.MAIL or self.busy or not self.alive:
            return DOWNSTREAM_LOST
        arg = b" ".join(
            [
                b"RCPT TO:<" + rcpt.encode("utf-8", "surrogateescape") + b">",
                *params_for(params, RCPT_PARAM_EXT, self.caps),
            ]
        )
        try:
            code, text = await self._command(State.MAIL, arg)
        except _Lost:
            return DOWNSTREAM_LOST
        if 200 <= code < 300:
            self.rcpts += 1
        return self._reply(code, text)

    async def data(self, message: bytes) -> Reply:
        if self.state is not State.MAIL or self.busy or not self.alive or not self.rcpts:
            return DOWNSTREAM_LOST
        try:
            code, text = await self._command(State.DATA, b"DATA")
            if code != 354:
                self.state = State.MAIL
                if code == 421:
                    self._abort()
                    return _temporary(code, text)
                await self.rset()
                return from_downstream(code, text)
            replies = await self._exchange(State.DATA, self._content(message))
        except _Lost:
            return DOWNSTREAM_LOST
        self.state = State.IDLE  # RFC 2033 4.2: the transaction is over after the last reply
        if any(code == 421 for code, _ in replies):
            self._abort()
        for code, text in replies:
            if code >= 400:
                return _temporary(code, text) if code == 421 or code < 500 else from_downstream(code, text)
        code, text = replies[0]
        return from_downstream(code, text)

    async def _content(self, message: bytes) -> list[tuple[int, str]]:
        assert self.writer is not None
        self.writer.write(dot_stuff(message))
        self.writer.write(b".\r\n")
        replies = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.data_timeout
        for _ in range(self.rcpts):
            replies.append(await self._read_reply(max(0.0, deadline - loop.time())))
        return replies

    def _reply(self, code: int, text: str) -> Reply:
        if code == 421:
            self._abort()
            return _temporary(code, text)
        return from_downstream(code, text)

    async def rset(self) -> None:
        if self.writer is None or (self.state in (State.CLOSED, State.IDLE) and not self.busy):
            return
        if self.busy or self.state is State.BROKEN:
            self._abort()
            return
        try:
            code, _ = await self._command(self.state, b"RSET")
        except _Lost:
            return
        if code == 250:
            self.state = State.IDLE
            self.rcpts = 0
        else:
            self._abort()

    async def close(self) -> None:
        """QUIT at a command boundary, else just drop the connection."""
        writer = self.writer
        clean = not self.busy and self.state is State.IDLE and self.alive
        if writer is not None and clean:
            try:
                await self._command(State.IDLE, b"QUIT", 2.0)
            except _Lost:
                pass
            writer = self.writer
        self.reader, self.writer = None, None
        self.state = State.CLOSED
        self.busy = False
        if writer is not None:
            writer.transport.abort()
