"""One client connection: bytes in, replies out, commands dispatched to the mail flow.

Built on aiosmtpd's ``SMTP`` protocol class (pinned to 1.4.6: this module overrides its
private ``_handle_client``; ``tests/test_aiosmtpd_contract.py`` fails if upstream changes what
we rely on). What is aiosmtpd's: the transport and STARTTLS plumbing (``connection_made``
clears the plaintext buffer after the handshake: CVE-2024-34083), the idle timer and the
PROXY protocol parser. What is ours: admission and PROXY only from trusted networks, the
connect stage (with the greeting hook a check may use), the command loop (control characters,
forbidden HTTP verbs, an error budget, a junk-command budget, a 421 on timeout), STARTTLS, and
reading DATA in large chunks under a per-worker byte budget. HELO, MAIL, RCPT and DATA go to
:class:`proxy.session.flow.MailFlow`, which owns the transaction and the downstream session.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import structlog
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Session as AiosmtpdSession

from proxy import replies as R
from proxy.checks.base import CheckContext
from proxy.model import Action, Connection, Reply, Stage, Transaction
from proxy.session.admission import behind_proxy, identify
from proxy.session.flow import MailFlow
from proxy.session.greeting import GreetingProbe
from proxy.session.intake import Intake
from proxy.session.runtime import Generation, Runtime
from proxy.session.tls import start_tls
from proxy.session.txlog import log_connection
from proxy.smtp.command import CommandError, parse_command
from proxy.smtp.data import DataReader

log = structlog.get_logger("spamgate")

READER_LIMIT = 32 * 1024
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP", "EHLO", "HELO"})


class SmtpSession(AiosmtpdSMTP):
    """The protocol instance of one client connection."""

    _handle_hooks: dict[str, Any] = {}
    COMMANDS: ClassVar[dict[str, Callable[[SmtpSession, str], Awaitable[None]]]] = {}

    def __init__(self, runtime: Runtime) -> None:
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=READER_LIMIT, loop=loop),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.loop = loop
        self.rt = runtime
        self.gen: Generation = runtime.gen
        cfg = self.gen.config
        self.hostname = cfg.server.hostname
        self.enable_SMTPUTF8 = cfg.smtp.advertise_smtputf8
        self.tls_context = self.gen.tls_context
        self._timeout_duration = cfg.limits.idle_timeout
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport: asyncio.BaseTransport | None = None
        self.session: AiosmtpdSession | None = None
        self.envelope = None
        self.transport: Any = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._pending = bytearray()
        self.conn: Connection | None = None
        self.flow: MailFlow | None = None
        self._closing = False
        self._admitted = False
        self._close_reason = ""
        self._intake = Intake(runtime)

    @property
    def _flow(self) -> MailFlow:
        assert self.flow is not None, "commands are read only once the connection is accepted"
        return self.flow

    @property
    def txn(self) -> Transaction | None:
        return self.flow.txn if self.flow is not None else None

    # -- aiosmtpd plumbing we keep, trimmed ---------------------------------------------

    def _create_session(self) -> AiosmtpdSession:
        return AiosmtpdSession(self.loop)

    def _set_rset_state(self) -> None:
        """aiosmtpd's envelopes are not used; transactions live in the mail flow."""

    def _timeout_cb(self) -> None:
        self._close_reason = self._close_reason or "timeout"
        self._close_with(R.TIMEOUT)

    def reset_timeout(self, seconds: float | None = None) -> None:
        self._reset_timeout(seconds)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._handler_coroutine is not None and self not in self.rt.sessions:
            self.rt.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.rt.sessions.discard(self)
        super().connection_lost(error)

    def _close_with(self, reply: Reply) -> None:
        """Write a final reply without waiting and close (timeouts, shutdown)."""
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(reply.render().encode() + b"\r\n")
            transport.close()

    def shutdown(self, reason: str) -> None:
        """Drain: close now with 421 (the listener calls this on idle sessions, then on all)."""
        self._close_reason = reason
        self._close_with(R.SHUTTING_DOWN)

    # -- replies ------------------------------------------------------------------------

    async def reply(self, r: Reply) -> None:
        self._writer.write(r.render().encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()

    async def error(self, r: Reply) -> None:
        """A reply for a client mistake: counts toward limits.max_errors."""
        await self.reply(r)
        conn = self.conn
        assert conn is not None
        conn.errors += 1
        if conn.errors >= self.gen.config.limits.max_errors:
            self._close_reason = "too_many_errors"
            await self.reply(R.TOO_MANY_ERRORS)
            self._shut()

    def close_after(self, reason: str) -> None:
        self._close_reason = reason
        self._shut()

    def _shut(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # -- reading ------------------------------------------------------------------------

    async def _readline(self) -> bytes:
        pending = self._pending
        if pending:
            i = pending.find(b"\n")
            if i >= 0:
                line = bytes(pending[: i + 1])
                del pending[: i + 1]
                return line
            rest = await self._reader.readuntil(b"\n")
            line = bytes(pending) + rest
            pending.clear()
            return line
        return await self._reader.readuntil(b"\n")

    async def _command_line(self) -> bytes | None:
        """The next line, or None for one longer than the reader's limit (read and dropped)."""
        try:
            return await self._readline()
        except asyncio.LimitOverrunError as e:
            self._pending.clear()  # the line's start, left over from the DATA read
            await self._discard_long_line(e.consumed)
            return None

    async def _discard_long_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as e:
                await self._reader.readexactly(e.consumed)

    async def read_data(self, limit: int) -> DataReader:
        """Read DATA up to CRLF.CRLF in large chunks, within the worker's byte budget."""
        first, self._pending = bytes(self._pending), bytearray()
        reader = await self._intake.read(self._reader, first, limit, self.gen.config.limits.inflight_bytes)
        self._pending = bytearray(reader.leftover)
        return reader

    def release_data(self) -> None:
        self._intake.release()

    # -- the session ----------------------------------------------------------------------

    async def _handle_client(self) -> None:
        conn: Connection | None = None
        try:
            conn = await self._accept()
            if conn is None:
                return
            self.conn = conn
            self.flow = MailFlow(self, self.gen, conn)
            if not await self._connect_stage(conn):
                return
            await self._command_loop(conn)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            self._close_reason = self._close_reason or "disconnected"
        except Exception as exc:
            # Outside a command (greeting, connect checks...): never leave the socket open.
            self._close_reason = "error"
            log.error("session_error", error=repr(exc), traceback=traceback.format_exc())
            self._close_with(R.INTERNAL_ERROR_CLOSING)
        finally:
            self._cleanup(conn or self.conn)  # self.conn: refused at admission, logged too

    async def _accept(self) -> Connection | None:
        gen = self.gen
        proxied = behind_proxy(self.transport, gen)
        if proxied:
            self._reset_timeout(gen.config.proxy_protocol.timeout)
        conn = await identify(self.transport, self._reader, gen)
        if conn is None:
            self._shut()
            return None
        if proxied:
            self._reset_timeout()
        why = self.rt.admit(conn.ip_str)
        if why:
            self.conn = conn
            self._close_reason = f"limit_{why}"
            await self.reply(R.TOO_MANY_CONNECTIONS if why == "total" else R.TOO_MANY_CONNECTIONS_IP)
            self._shut()
            return None
        self._admitted = True
        return conn

    async def _connect_stage(self, conn: Connection) -> bool:
        gen = self.gen
        greeting = R.greeting(gen.config.server.hostname, gen.config.server.banner)
        if self.rt.draining:
            await self.reply(R.SHUTTING_DOWN)
            self._shut()
            return False
        if gen.pipeline.has_stage(Stage.CONNECT):
            server = gen.config.server
            probe = GreetingProbe(
                self._reader, self._writer, self._pending, f"{server.hostname} {server.banner}"
            )
            await gen.pipeline.before_greeting(conn, probe)
            teased = probe.teased  # the greeting began with "220-": it must end with 220
            hits = await gen.pipeline.run(Stage.CONNECT, CheckContext(Stage.CONNECT, conn))
            conn.connect_hits = hits
            verdict = gen.policy.decide(hits, Stage.CONNECT)
            conn.notes["connect_verdict"] = verdict
            if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
                reply = verdict.reply.with_ref(conn.conn_ref)
                conn.rejected = reply
                self._close_reason = f"connect_{verdict.action.label}"
                if teased:
                    # A reply keeps one code on all its lines: end the greeting as begun, then refuse.
                    await self.reply(greeting)
                if verdict.action == Action.TEMPFAIL or reply.code == 421:
                    await self.reply(reply)
                    self._shut()
                    return False
                if teased:
                    await self._reject_until_quit(reply)
                    return False
                await self.reply(reply)
                await self._reject_until_quit(R.CONNECT_REJECTED_BUSY)
                return False
        await self.reply(greeting)
        if gen.config.relay.connect_at == "connect":
            await self._flow.open_downstream()
        return True

    async def _reject_until_quit(self, answer: Reply) -> None:
        """RFC 5321 3.1: after a 554 greeting, refuse everything until QUIT."""
        while not self._closing:
            line = await self._command_line()
            if line is not None and line.rstrip(b"\r\n").upper() == b"QUIT":
                await self.reply(R.BYE)
                self._shut()
                return
            await self.error(answer)

    async def _command_loop(self, conn: Connection) -> None:
        limits = self.gen.config.limits
        max_line = limits.command_line_length
        forbidden = self.gen.forbidden
        commands = self.COMMANDS
        while not self._closing and self.transport is not None:
            line = await self._command_line()
            if line is None or len(line) > max_line:
                await self.error(R.LINE_TOO_LONG)
                continue
            try:
                command = parse_command(line)
            except CommandError as exc:
                await self.error(R.CONTROL_CHARACTERS if exc.reason == "control" else R.SYNTAX_ERROR)
                continue
            verb = command.verb
            handler = commands.get(verb)
            if handler is None:
                if verb in forbidden:
                    self._close_reason = "non_smtp"
                    await self.reply(R.PROTOCOL_ERROR)
                    self._shut()
                    return
                if verb == "PROXY":
                    self._close_reason = "proxy_untrusted"
                    await self.reply(R.PROXY_NOT_ALLOWED)
                    self._shut()
                    return
                await self.error(R.SYNTAX_ERROR)
                continue
            if verb in JUNK_VERBS:
                conn.junk += 1
                if conn.junk > limits.max_junk_commands:
                    # Postfix's junk command limit: a session that moves no mail holds a slot.
                    self._close_reason = "too_many_junk_commands"
                    await self.reply(R.TOO_MANY_JUNK_COMMANDS)
                    self._shut()
                    return
            self._reset_timeout()
            try:
                await handler(self, command.arg)
            except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as exc:
                await self._internal_error(conn, exc)
            if self.rt.draining and self.txn is None and not self._closing:
                self._close_reason = "shutdown"
                await self.reply(R.SHUTTING_DOWN)
                self._shut()

    async def _internal_error(self, conn: Connection, exc: Exception) -> None:
        txn = self.txn
        ref = txn.ref if txn else conn.conn_ref
        # The traceback as a field: the JSON renderer does not format exc_info.
        log.error("session_error", ref=ref, error=repr(exc), traceback=traceback.format_exc())
        if txn is not None and self.flow is not None:
            self.flow.finish(txn, R.INTERNAL_ERROR.with_ref(ref), "error")
            await self.flow.abort("error")
        await self.reply(R.INTERNAL_ERROR.with_ref(ref))

    def _cleanup(self, conn: Connection | None) -> None:
        # The session is over even if its transport never reports connection_lost (a failed
        # TLS handshake): it must not hold a connection slot or delay a drain.
        self.rt.sessions.discard(self)
        self.release_data()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if conn is None:
            return
        if self.flow is not None:
            self.flow.release()
        if self._admitted:
            self._admitted = False
            self.rt.release(conn.ip_str)
        closed = self._close_reason or "closed"
        conn.notes["closed"] = closed
        log_connection(conn, closed)
        for cb in self.gen.services.on_close:
            cb(conn)

    # -- the verbs ----------------------------------------------------------------------------

    async def smtp_HELO(self, arg: str) -> None:
        await self._flow.greet(arg, esmtp=False)

    async def smtp_EHLO(self, arg: str) -> None:
        await self._flow.greet(arg, esmtp=True)

    async def smtp_MAIL(self, arg: str) -> None:
        await self._flow.mail(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        await self._flow.rcpt(arg)

    async def smtp_DATA(self, arg: str) -> None:
        await self._flow.data(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self.error(R.PARAM_SYNTAX)
            return
        await self._flow.abort("rset")
        await self.reply(R.OK)

    async def smtp_NOOP(self, arg: str) -> None:
        await self.reply(R.OK)

    async def smtp_QUIT(self, arg: str) -> None:
        self._close_reason = self._close_reason or "quit"
        await self.reply(R.BYE)
        self._shut()

    async def smtp_VRFY(self, arg: str) -> None:
        await self.reply(R.NO_VRFY)

    async def smtp_HELP(self, arg: str) -> None:
        await self.reply(R.HELP)

    async def smtp_EXPN(self, arg: str) -> None:
        await self.error(R.NOT_IMPLEMENTED)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.error(R.AUTH_NOT_OFFERED)

    async def smtp_STARTTLS(self, arg: str) -> None:
        conn = self.conn
        assert conn is not None
        ctx = self.gen.tls_context
        if arg:
            await self.error(R.PARAM_SYNTAX)
            return
        if ctx is None:
            await self.error(R.NOT_IMPLEMENTED)
            return
        if conn.tls:
            await self.error(R.TLS_ALREADY)
            return
        # Plaintext pipelined after STARTTLS must not be read as commands (CVE-2011-0411 class).
        self._pending.clear()
        await self.reply(R.READY_TLS)
        tls = await start_tls(self, ctx)
        if not tls:
            self._close_reason = "tls_failed"
            self._shut()
            return
        conn.tls = tls
        # RFC 3207 4.2: forget what the client told us before TLS.
        await self._flow.abort("starttls")
        conn.helo = ""
        conn.esmtp = False
        conn.helo_hits = []
        self._pending.clear()


SmtpSession.COMMANDS = {
    name[5:]: getattr(SmtpSession, name) for name in dir(SmtpSession) if name.startswith("smtp_")
}
