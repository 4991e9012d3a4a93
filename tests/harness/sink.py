"""A recording downstream SMTP server with fault modes, on loopback, in its own thread.

It is the "real mail server" behind spamgate in the tests: it speaks enough ESMTP
(PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, XCLIENT, ENHANCEDSTATUSCODES, optional STARTTLS)
and records every message it accepted with its envelope, parameters, XCLIENT attributes and
exact bytes (dot-unstuffed). Faults, settable at any time from the test:

- ``reject_rcpts``: addresses answered ``550 5.1.1 User unknown``
- ``tempfail_rcpts``: addresses answered ``450 4.2.1 Mailbox busy``
- ``data_reply``: a reply to give at the end of DATA instead of 250 (e.g. "451 4.3.0 ...")
- ``drop_in_data``: close the connection after 354 once some data arrived
- ``delay``: seconds to wait before every reply (slow server)
- ``delays``: per stage seconds to wait before that stage's reply (``{"dot": 3.0}``: slow DATA end)
- ``fail_at``: per stage reply given instead of the normal one; a 421 also closes the session.
  Stages: ``greeting``, ``ehlo``, ``mail``, ``rcpt``, ``data`` (the DATA command), ``dot``
  (end of data), ``rset``
- ``fault``: a callable ``(stage) -> reply | "drop" | "sleep <s>" | None`` asked at every stage
  (random faults); "drop" aborts the connection, "sleep <s>" delays the normal reply
- ``lenient_dot``: also end DATA at a "." line ended by a bare LF (a smuggling-prone downstream)
- ``drop_nul``: drop NUL bytes from DATA before looking for its end (as several MTAs do)
- ``fail_at["xclient"]``: refuse XCLIENT (e.g. "550 5.7.0 Error: insufficient authorization")

Command order is enforced as strictly as Postfix's smtpd does: MAIL before HELO/EHLO, MAIL
inside a transaction (``503 5.5.1 Error: nested MAIL command``), RCPT before MAIL, DATA before
RCPT and XCLIENT inside a transaction all get a 503; sender and recipients are reset by a
delivered message, RSET, HELO/EHLO and XCLIENT (which also forgets the EHLO). A message refused
at the end of data (``data_reply``, a ``dot`` fault) keeps the envelope, as Postfix does after
an ``smtpd_end_of_data_restrictions`` refusal: only RSET makes the session usable again.
Every 503 the sink gave is recorded in ``state.sequence_errors`` ("<command>: <reply>"), so a
test can assert spamgate never sent a command out of order.
- ``stop()``/``start()``: the server is down / up again
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    mail_from: str
    mail_params: list[str]
    rcpts: list[str]
    rcpt_params: dict[str, list[str]]
    data: bytes
    xclient: dict[str, str]
    helo: str
    tls: bool


@dataclass
class SinkState:
    messages: list[Message] = field(default_factory=list)
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    sequence_errors: list[str] = field(default_factory=list)
    reject_rcpts: set[str] = field(default_factory=set)
    tempfail_rcpts: set[str] = field(default_factory=set)
    data_reply: str = ""
    drop_in_data: bool = False
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)
    fail_at: dict[str, str] = field(default_factory=dict)
    fault: Callable[[str], str | None] | None = None
    lenient_dot: bool = False  # end data at "\n.\n" too, like a smuggling-prone server
    drop_nul: bool = False  # remove NULs before looking for the end of data
    extensions: list[str] = field(
        default_factory=lambda: [
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "ENHANCEDSTATUSCODES",
        ]
    )
    xclient: bool = True


class _Session:
    def __init__(self, sink: Sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sink, self.r, self.w = sink, reader, writer
        self.helo = ""
        self.xclient: dict[str, str] = {}
        self.tls = False
        self.reset()

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.mail_params: list[str] = []
        self.rcpts: list[str] = []
        self.rcpt_params: dict[str, list[str]] = {}

    async def send(self, line: str) -> None:
        st = self.sink.state
        if st.delay:
            await asyncio.sleep(st.delay)
        self.w.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        await self.w.drain()

    async def out_of_order(self, verb: str, text: str) -> bool:
        """Postfix's smtpd_check order rules; True when the command was refused with a 503."""
        reply = ""
        if verb == "MAIL":
            if not self.helo:
                reply = "503 5.5.1 Error: send HELO/EHLO first"
            elif self.mail_from is not None:
                reply = "503 5.5.1 Error: nested MAIL command"
        elif verb == "RCPT" and self.mail_from is None:
            reply = "503 5.5.1 Error: need MAIL command"
        elif verb == "DATA" and self.mail_from is None:
            reply = "503 5.5.1 Error: need RCPT command"
        elif verb == "XCLIENT" and self.mail_from is not None:
            reply = "503 5.5.1 Error: MAIL transaction in progress"
        if not reply:
            return False
        self.sink.state.sequence_errors.append(f"{text}: {reply}")
        await self.send(reply)
        return True

    async def fault(self, stage: str) -> bool:
        """Apply the stage's configured fault; True when it replied (or dropped) instead."""
        st = self.sink.state
        wait = st.delays.get(stage)
        if wait:
            await asyncio.sleep(wait)
        reply = st.fail_at.get(stage)
        if reply is None and st.fault is not None:
            reply = st.fault(stage)
        if reply is not None and reply.startswith("sleep "):
            await asyncio.sleep(float(reply[6:]))
            return False
        if reply is None:
            return False
        if reply == "drop":
            self.w.transport.abort()
            raise ConnectionResetError("sink dropped the connection")
        await self.send(reply)
        if reply.startswith("421"):
            self.w.close()
            raise ConnectionResetError("sink closed with 421")
        return True

    async def run(self) -> None:
        st = self.sink.state
        st.connections += 1
        if await self.fault("greeting"):
            return
        await self.send("220 sink.test ESMTP sink")
        while True:
            line = await self.r.readline()
            if not line:
                return
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            st.commands.append(text)
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            stage = {"EHLO": "ehlo", "HELO": "ehlo"}.get(verb, verb.lower())
            if await self.out_of_order(verb, text):
                continue
            if stage in ("ehlo", "mail", "rcpt", "data", "rset", "xclient") and await self.fault(stage):
                continue
            if verb == "EHLO":
                self.helo = arg
                self.reset()
                exts = list(st.extensions)
                if st.xclient:
                    exts.append("XCLIENT ADDR NAME HELO PROTO")
                if self.sink.tls_context is not None and not self.tls:
                    exts.append("STARTTLS")
                lines = ["sink.test", *exts]
                for i, ln in enumerate(lines):
                    await self.send(("250 " if i == len(lines) - 1 else "250-") + ln)
            elif verb == "HELO":
                self.helo = arg
                self.reset()
                await self.send("250 sink.test")
            elif verb == "XCLIENT":
                for item in arg.split():
                    k, _, v = item.partition("=")
                    self.xclient[k.upper()] = v
                self.helo = ""  # as after a new connection: EHLO again
                self.reset()
                await self.send("220 sink.test ESMTP sink")
            elif verb == "STARTTLS" and self.sink.tls_context is not None:
                await self.send("220 2.0.0 go ahead")
                await self.w.start_tls(self.sink.tls_context)
                self.tls = True
            elif verb == "MAIL":
                parts = arg.split(" ")
                self.mail_from = parts[0][5:].strip("<>")
                self.mail_params = parts[1:]
                await self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                parts = arg.split(" ")
                rcpt = parts[0][3:].strip("<>")
                if rcpt in st.reject_rcpts:
                    await self.send(f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
                elif rcpt in st.tempfail_rcpts:
                    await self.send("450 4.2.1 Mailbox busy, try later")
                else:
                    self.rcpts.append(rcpt)
                    self.rcpt_params[rcpt] = parts[1:]
                    await self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not self.rcpts:
                    await self.send("554 5.5.1 Error: no valid recipients")
                    continue
                await self.send("354 End data with <CR><LF>.<CR><LF>")
                data = await self._read_data()
                if data is None:
                    return
                if await self.fault("dot"):
                    continue  # refused: the envelope stays, as after a Postfix end-of-data reject
                if st.data_reply:
                    await self.send(st.data_reply)
                    continue
                st.messages.append(
                    Message(
                        self.mail_from or "",
                        self.mail_params,
                        list(self.rcpts),
                        dict(self.rcpt_params),
                        data,
                        dict(self.xclient),
                        self.helo,
                        self.tls,
                    )
                )
                await self.send(f"250 2.0.0 Ok: queued as Q{len(st.messages)}")
                self.reset()
            elif verb == "RSET":
                self.reset()
                await self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                await self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                await self.send("221 2.0.0 Bye")
                return
            else:
                await self.send("502 5.5.2 Error: command not recognized")

    async def _read_data(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            line = await self.r.readline()
            if not line:
                return None
            if self.sink.state.drop_in_data and chunks:
                self.w.transport.abort()
                return None
            if self.sink.state.drop_nul:
                line = line.replace(b"\x00", b"")
            if line == b".\r\n" or (self.sink.state.lenient_dot and line.rstrip(b"\r\n") == b"."):
                return b"".join(chunks)
            if line.startswith(b"."):
                line = line[1:]
            chunks.append(line)


class Sink:
    """Start with ``Sink().start()``; ``port`` is its loopback port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port = host, port
        self.tls_context = tls_context
        self.state = SinkState()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._sessions: set[asyncio.Task[Any]] = set()

    @property
    def messages(self) -> list[Message]:
        return self.state.messages

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await _Session(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def start(self) -> Sink:
        async def go() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)
        return self

    def stop(self) -> None:
        """Down: stop listening and drop every open session."""

        async def go() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for t in list(self._sessions):
                t.cancel()
            await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
