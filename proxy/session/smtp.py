"""One client SMTP session: the stage machine connect -> helo -> mail -> rcpt -> data.

Built on aiosmtpd's ``SMTP`` protocol class (pinned to 1.4.6: this module overrides its
private ``_handle_client``; ``tests/test_aiosmtpd_contract.py`` fails if upstream changes what
we rely on). What is aiosmtpd's: the transport and STARTTLS plumbing (``connection_made``
clears the plaintext buffer after the handshake: CVE-2024-34083), the idle timer and the
PROXY protocol parser. What is ours, and why:

- ``__init__``: aiosmtpd introspects the handler and itself on every connection (~0.3 ms);
  our command table is built once per class.
- the command loop: connect-stage checks before the greeting, PROXY only from trusted
  networks, per-client limits, forbidden (HTTP) commands, an error budget, enhanced status
  codes on every reply, a 421 on timeout.
- MAIL/RCPT: DSN parameters (RET, ENVID, NOTIFY, ORCPT) accepted and passed on; a fast parser.
- DATA: read in chunks rather than line by line, end only at CRLF.CRLF, bare CR/LF detected,
  size enforced while receiving, then the message relayed in-session.

Every reply that refuses or defers carries an enhanced code and the reference id of the
transaction (``550 5.7.1 [ref 3f9a1c07.2] ...``), which is also in the transaction log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import traceback
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import structlog
from aiosmtpd.proxy_protocol import V2_CMD, get_proxy
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Session as AiosmtpdSession

from proxy import replies as R
from proxy.checks.base import CheckContext, Stage, SymbolDef
from proxy.checks.connect import pregreet
from proxy.checks.core_symbols import BARE_NEWLINE, LINE_TOO_LONG, SIZE_EXCEEDED, TOO_MANY_RCPTS
from proxy.policy.engine import Action, Hit, Verdict
from proxy.relay.base import ClientIdentity, Downstream
from proxy.replies import Reply
from proxy.session.address import PathError, is_xtext, parse_path
from proxy.session.runtime import Generation, Runtime
from proxy.session.state import Connection, RcptResult, Transaction, new_connection_id
from proxy.session.trace import add_subject_prefix, header, received_header, strip_own_auth_results

log = structlog.get_logger("spamgate")

READER_LIMIT = 32 * 1024
CHUNK = 64 * 1024
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


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
        self._tls_protocol: sslproto.SSLProtocol | None = None
        self._original_transport: asyncio.BaseTransport | None = None
        self.session: AiosmtpdSession | None = None
        self.envelope = None
        self.transport: Any = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._pending = bytearray()
        self.conn: Connection | None = None
        self.txn: Transaction | None = None
        self.downstream: Downstream | None = None
        self.rcpt_hits: dict[str, list[Hit]] = {}
        self._closing = False
        self._admitted = False
        self._close_reason = ""

    # -- aiosmtpd plumbing we keep, trimmed ---------------------------------------------

    def _create_session(self) -> AiosmtpdSession:
        return AiosmtpdSession(self.loop)

    def _set_rset_state(self) -> None:
        """aiosmtpd's envelopes are not used; transactions live in ``self.txn``."""

    def _timeout_cb(self) -> None:
        self._close_reason = self._close_reason or "timeout"
        self._close_with(R.TIMEOUT)

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

    async def _discard_long_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as e:
                await self._reader.readexactly(e.consumed)

    # -- the session ----------------------------------------------------------------------

    async def _handle_client(self) -> None:
        conn: Connection | None = None
        try:
            conn = await self._accept()
            if conn is None:
                return
            self.conn = conn
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
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        sock = self.transport.get_extra_info("sockname") or ("", 0)
        peer_ip = _ip(peer[0])
        ip, port = peer_ip, int(peer[1])
        if gen.trusted_proxies and any(peer_ip in n for n in gen.trusted_proxies):
            self._reset_timeout(gen.config.proxy_protocol.timeout)
            data = await get_proxy(self._reader)
            if not data.valid:
                log.warning("proxy_protocol_invalid", peer=str(peer_ip), error=data.error)
                self._shut()
                return None
            if data.command != V2_CMD.LOCAL and data.src_addr is not None:
                ip, port = _ip(str(data.src_addr)), int(data.src_port or 0)
            self._reset_timeout()
        conn = Connection(new_connection_id(), ip, port, (str(peer[0]), int(peer[1])), int(sock[1]))
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
        if self.rt.draining:
            await self.reply(R.SHUTTING_DOWN)
            self._shut()
            return False
        if gen.pipeline.has_stage(Stage.CONNECT):
            await pregreet.before_checks(self, conn)  # postscreen-style "220-" teaser, when enabled
            hits = await gen.pipeline.run(Stage.CONNECT, CheckContext(Stage.CONNECT, conn))
            conn.connect_hits = hits
            verdict = gen.policy.decide(hits, Stage.CONNECT)
            conn.notes["connect_verdict"] = verdict
            if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
                reply = verdict.reply.with_ref(conn.conn_ref)
                conn.rejected = reply
                self._close_reason = f"connect_{verdict.action.label}"
                if verdict.action == Action.TEMPFAIL or reply.code == 421:
                    await self.reply(reply)
                    self._shut()
                    return False
                await self.reply(reply)
                await self._reject_until_quit()
                return False
        await self.reply(R.greeting(gen.config.server.hostname, gen.config.server.banner))
        if gen.config.relay.connect_at == "connect":
            self.downstream = gen.new_downstream()
            await self.downstream.open()
        return True

    async def _reject_until_quit(self) -> None:
        """RFC 5321 3.1: after a 554 greeting, answer 503 to everything until QUIT."""
        conn = self.conn
        assert conn is not None
        while not self._closing:
            try:
                line = await self._readline()
            except asyncio.LimitOverrunError as e:
                self._pending.clear()
                await self._discard_long_line(e.consumed)
                await self.error(R.CONNECT_REJECTED_BUSY)
                continue
            if line.rstrip(b"\r\n").upper() == b"QUIT":
                await self.reply(R.BYE)
                self._shut()
                return
            await self.error(R.CONNECT_REJECTED_BUSY)

    async def _command_loop(self, conn: Connection) -> None:
        limits = self.gen.config.limits
        max_line = limits.command_line_length
        forbidden = self.gen.forbidden
        commands = self.COMMANDS
        while not self._closing and self.transport is not None:
            try:
                line = await self._readline()
            except asyncio.LimitOverrunError as e:
                self._pending.clear()  # the line's start, left over from the DATA read
                await self._discard_long_line(e.consumed)
                await self.error(R.LINE_TOO_LONG)
                continue
            if len(line) > max_line:
                await self.error(R.LINE_TOO_LONG)
                continue
            line = line.rstrip(b"\r\n")
            verb_bytes, _, arg_bytes = line.partition(b" ")
            try:
                verb = verb_bytes.decode("ascii").upper()
            except UnicodeDecodeError:
                await self.error(R.SYNTAX_ERROR)
                continue
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
            self._reset_timeout()
            arg = arg_bytes.decode("utf-8", "surrogateescape").strip()
            try:
                await handler(self, arg)
            except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as exc:
                ref = self.txn.ref if self.txn else conn.conn_ref
                # The traceback as a field: the JSON renderer does not format exc_info.
                log.error("session_error", ref=ref, error=repr(exc), traceback=traceback.format_exc())
                if self.txn is not None:
                    self._finish(self.txn, R.INTERNAL_ERROR.with_ref(ref), "error")
                await self.reply(R.INTERNAL_ERROR.with_ref(ref))
            if self.rt.draining and self.txn is None and not self._closing:
                self._close_reason = "shutdown"
                await self.reply(R.SHUTTING_DOWN)
                self._shut()

    def _cleanup(self, conn: Connection | None) -> None:
        # The session is over even if its transport never reports connection_lost (a failed
        # TLS handshake): it must not hold a connection slot or delay a drain.
        self.rt.sessions.discard(self)
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if conn is None:
            return
        if self.txn is not None:
            self._finish(self.txn, None, "aborted")
        if self._admitted:
            self._admitted = False
            self.rt.release(conn.ip_str)
        if self.downstream is not None:
            self.gen.release_downstream(self.downstream)
            self.downstream = None
        self._log_connection(conn)
        conn.notes["closed"] = self._close_reason or "closed"
        for cb in self.gen.services.on_close:
            cb(conn)

    # -- verdict helpers -------------------------------------------------------------------

    def _decide(self, hits: list[Hit], stage: Stage) -> Verdict:
        return self.gen.policy.decide(hits, stage)

    def _protocol_hit(self, sym: SymbolDef, evidence: str) -> Hit:
        return self.gen.policy.score(sym.hit(evidence), "session", observe=False)

    def _ctx(self, stage: Stage, hits: list[Hit], **kw: Any) -> CheckContext:
        assert self.conn is not None
        return CheckContext(
            stage,
            self.conn,
            self.txn,
            fired=frozenset(h.name for h in hits),
            score=sum(h.score for h in hits),
            **kw,
        )

    # -- HELO / EHLO ------------------------------------------------------------------------

    async def smtp_HELO(self, arg: str) -> None:
        await self._greet(arg, esmtp=False)

    async def smtp_EHLO(self, arg: str) -> None:
        await self._greet(arg, esmtp=True)

    async def _greet(self, arg: str, *, esmtp: bool) -> None:
        conn = self.conn
        assert conn is not None
        if not arg:
            await self.error(R.HELO_SYNTAX)
            return
        await self._abort_txn("helo")
        conn.helo = arg.split(maxsplit=1)[0]
        conn.esmtp = esmtp
        conn.helo_hits = []
        gen = self.gen
        if gen.pipeline.has_stage(Stage.HELO):
            conn.helo_hits = await gen.pipeline.run(Stage.HELO, self._ctx(Stage.HELO, conn.connect_hits))
            verdict = self._decide(conn.hits, Stage.HELO)
            conn.notes["helo_verdict"] = verdict
            if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
                conn.helo = ""
                await self.error(verdict.reply.with_ref(conn.conn_ref))
                return
        if not esmtp:
            await self.reply(R.helo_ok(gen.config.server.hostname))
            return
        lines = [
            gen.config.server.hostname,
            "PIPELINING",
            f"SIZE {gen.config.limits.max_message_size}",
        ]
        lines += ["8BITMIME"]
        if gen.config.smtp.advertise_smtputf8:
            lines.append("SMTPUTF8")
        lines.append("ENHANCEDSTATUSCODES")
        if gen.tls_context is not None and not conn.tls:
            lines.append("STARTTLS")
        if gen.config.smtp.advertise_dsn:
            lines.append("DSN")
        await self.reply(R.ehlo_ok(lines))

    # -- MAIL -------------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str) -> None:
        conn = self.conn
        assert conn is not None
        cfg = self.gen.config
        if not conn.helo:
            await self.error(R.BAD_SEQUENCE_HELO)
            return
        if cfg.tls.require and self.gen.tls_context is not None and not conn.tls:
            await self.error(R.TLS_REQUIRED)
            return
        if self.txn is not None:
            await self.error(R.NESTED_MAIL)
            return
        if conn.txn_count >= cfg.limits.max_transactions:
            self._close_reason = "too_many_transactions"
            await self.reply(R.TOO_MANY_TRANSACTIONS)
            self._shut()
            return
        try:
            path = parse_path(arg, "FROM")
        except PathError:
            await self.error(R.SENDER_SYNTAX)
            return
        params = path.params
        smtputf8 = "SMTPUTF8" in params
        size_hit: Hit | None = None
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    await self.error(R.PARAM_SYNTAX)
                    return
                if int(value) > cfg.limits.max_message_size:
                    size_hit = self._protocol_hit(SIZE_EXCEEDED, f"declared={value}")
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    await self.error(R.UNKNOWN_PARAM)
                    return
            elif key == "SMTPUTF8":
                if value is not None:
                    await self.error(R.PARAM_SYNTAX)
                    return
                if not cfg.smtp.advertise_smtputf8:
                    await self.error(R.SMTPUTF8_NOT_OFFERED)
                    return
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    await self.error(R.PARAM_SYNTAX)
                    return
            elif key == "ENVID":
                if not value or not is_xtext(value) or len(value) > 100:
                    await self.error(R.PARAM_SYNTAX)
                    return
            elif key != "AUTH":  # AUTH=<> from relaying MTAs is legal and meaningless here
                await self.error(R.UNKNOWN_PARAM)
                return
        params.pop("AUTH", None)
        if not smtputf8 and not path.address.isascii():
            await self.error(R.NON_ASCII_WITHOUT_SMTPUTF8)
            return
        txn = Transaction(
            conn.next_ref(),
            path.address,
            params,
            smtputf8=smtputf8,
            body=(params.get("BODY") or "").upper(),
        )
        self.txn = txn
        self.rcpt_hits = {}
        gen = self.gen
        if size_hit is not None:
            txn.hits.append(size_hit)
        if gen.pipeline.has_stage(Stage.MAIL):
            txn.hits += await gen.pipeline.run(Stage.MAIL, self._ctx(Stage.MAIL, conn.hits + txn.hits))
        verdict = self._decide(conn.hits + txn.hits, Stage.MAIL)
        self._record(txn, verdict)
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            reply = verdict.reply.with_ref(txn.ref)
            self._finish(txn, reply, "mail")
            await self.error(reply)
            return
        if self.downstream is None:
            self.downstream = gen.new_downstream()
        t0 = time.monotonic()
        reply = await self.downstream.mail(txn.mail_from, params, self._identity(conn))
        txn.stage_ms["downstream_mail"] = (time.monotonic() - t0) * 1000
        if not reply.is_positive:
            if reply in (R.DOWNSTREAM_UNAVAILABLE, R.DOWNSTREAM_LOST, R.DOWNSTREAM_TLS):
                reply = reply.with_ref(txn.ref)
            self._finish(txn, reply, "mail")
            await self.error(reply)
            return
        await self.reply(reply)

    def _identity(self, conn: Connection) -> ClientIdentity:
        return ClientIdentity(
            conn.ip_str, conn.port, conn.reverse_name, conn.helo, "ESMTP" if conn.esmtp else "SMTP"
        )

    # -- RCPT -------------------------------------------------------------------------------

    async def smtp_RCPT(self, arg: str) -> None:
        conn, txn = self.conn, self.txn
        assert conn is not None
        if txn is None:
            await self.error(R.BAD_SEQUENCE_MAIL)
            return
        try:
            path = parse_path(arg, "TO")
        except PathError:
            await self.error(R.RCPT_SYNTAX)
            return
        for key, value in path.params.items():
            if key == "NOTIFY":
                items = set((value or "").upper().split(","))
                if not (items == {"NEVER"} or (items and items <= NOTIFY_VALUES)):
                    await self.error(R.PARAM_SYNTAX)
                    return
            elif key == "ORCPT":
                if not value or ";" not in value or not is_xtext(value.split(";", 1)[1]):
                    await self.error(R.PARAM_SYNTAX)
                    return
            else:
                await self.error(R.UNKNOWN_PARAM)
                return
        if not txn.smtputf8 and not path.address.isascii():
            await self.error(R.NON_ASCII_WITHOUT_SMTPUTF8)
            return
        result = RcptResult(path.address, path.params)
        gen = self.gen
        if len(txn.accepted_rcpts) >= gen.config.limits.max_recipients:
            hits = [self._protocol_hit(TOO_MANY_RCPTS, str(len(txn.accepted_rcpts) + 1))]
        else:
            hits = []
            if gen.pipeline.has_stage(Stage.RCPT):
                base = conn.hits + txn.hits
                hits = await gen.pipeline.run(Stage.RCPT, self._ctx(Stage.RCPT, base, rcpt=path.address))
        verdict = self._decide(conn.hits + txn.hits + hits, Stage.RCPT)
        txn.rcpts.append(result)
        self.rcpt_hits[path.address] = hits
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            result.reply = verdict.reply.with_ref(txn.ref)
            result.refused_by = verdict.action.label
            if verdict.cause == TOO_MANY_RCPTS.name:
                await self.reply(result.reply)  # RFC 5321 4.5.3.1.10: not a client error
            else:
                await self.error(result.reply)
            return
        assert self.downstream is not None
        reply = await self.downstream.rcpt(path.address, path.params)
        if reply == R.DOWNSTREAM_LOST:
            reply = reply.with_ref(txn.ref)
        result.reply = reply
        result.accepted = reply.is_positive
        if reply.is_positive:
            await self.reply(reply)
        else:
            await self.error(reply)

    # -- DATA -------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        conn, txn = self.conn, self.txn
        assert conn is not None
        if txn is None:
            await self.error(R.BAD_SEQUENCE_MAIL)
            return
        if arg:
            await self.error(R.PARAM_SYNTAX)
            return
        if not txn.rcpts:
            await self.error(R.BAD_SEQUENCE_RCPT)
            return
        if not txn.accepted_rcpts:
            await self.error(R.NO_VALID_RCPT)
            return
        cfg = self.gen.config
        await self.reply(R.START_DATA)
        self._reset_timeout(cfg.limits.data_timeout)
        t0 = time.monotonic()
        message, size, overflow = await self._read_message(cfg.limits.max_message_size)
        txn.size = size
        txn.stage_ms["receive"] = (time.monotonic() - t0) * 1000
        self._reset_timeout(cfg.relay.data_timeout + cfg.policy.stage_timeout + 30)
        problem = self._message_problem(message, overflow, size)
        if problem is not None:
            txn.hits.append(problem)
            verdict = self._decide([problem], Stage.DATA)
            reply = (verdict.reply or R.SIZE_EXCEEDED).with_ref(txn.ref)
            self._record(txn, verdict)
            await self._reject_data(txn, reply)
            return
        # RFC 5321 4.5.2: remove the leading dot of every (CRLF-delimited, wire) line that has
        # one; then normalise bare CR/LF, so new line boundaries never lose a dot.
        if message.startswith(b"."):
            message = message[1:]
        message = message.replace(b"\r\n.", b"\r\n")
        if cfg.limits.bare_newline == "normalize" and self._has_bare_newline(message):
            message = _normalize_newlines(message)
        await self._data_stage(conn, txn, message)

    async def _read_message(self, limit: int) -> tuple[bytes, int, bool]:
        """Read up to CRLF.CRLF; returns (message with final CRLF, wire size, overflowed)."""
        buf = bytearray(b"\r\n")
        buf += self._pending
        self._pending.clear()
        discarded = 0
        start = 0
        read = self._reader.read
        while True:
            idx = buf.find(b"\r\n.\r\n", start)
            if idx >= 0:
                break
            if len(buf) > limit + 2:
                discarded += len(buf) - 4
                del buf[:-4]
            start = max(0, len(buf) - 4)
            chunk = await read(CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            buf += chunk
        self._pending = buf[idx + 5 :]
        if discarded:
            return b"", discarded + idx, True
        message = bytes(buf[2 : idx + 2])
        return message, len(message), len(message) > limit

    @staticmethod
    def _has_bare_newline(message: bytes) -> bool:
        crlf = message.count(b"\r\n")
        return message.count(b"\n") != crlf or message.count(b"\r") != crlf

    def _message_problem(self, message: bytes, overflow: bool, size: int) -> Hit | None:
        limits = self.gen.config.limits
        if overflow:
            return self._protocol_hit(SIZE_EXCEEDED, f"size>{limits.max_message_size}")
        if limits.bare_newline == "reject" and self._has_bare_newline(message):
            lf = message.count(b"\n") - message.count(b"\r\n")
            cr = message.count(b"\r") - message.count(b"\r\n")
            return self._protocol_hit(BARE_NEWLINE, f"bare_lf={lf} bare_cr={cr}")
        max_line = limits.text_line_length
        if size > max_line - 2:
            longest = max(map(len, message.split(b"\r\n")))
            if longest > max_line - 2:
                return self._protocol_hit(LINE_TOO_LONG, f"longest={longest + 2}")
        return None

    async def _reject_data(self, txn: Transaction, reply: Reply) -> None:
        self._finish(txn, reply, "data")
        if self.downstream is not None:
            await self.downstream.rset()
        await self.error(reply)

    async def _data_stage(self, conn: Connection, txn: Transaction, message: bytes) -> None:
        gen = self.gen
        rcpt_hits = _merge_rcpt_hits(self.rcpt_hits, txn.accepted_rcpts)
        hits = conn.hits + txn.hits + rcpt_hits
        if gen.pipeline.has_stage(Stage.DATA):
            t0 = time.monotonic()
            data_hits = await gen.pipeline.run(Stage.DATA, self._ctx(Stage.DATA, hits, message=message))
            txn.stage_ms["data_checks"] = (time.monotonic() - t0) * 1000
            txn.hits += data_hits
            hits += data_hits
        verdict = self._decide(hits, Stage.DATA)
        self._record(txn, verdict)
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            await self._reject_data(txn, verdict.reply.with_ref(txn.ref))
            return
        final = self._prepare(conn, txn, message, hits, verdict)
        assert self.downstream is not None
        t0 = time.monotonic()
        reply = await self.downstream.data(final)
        txn.stage_ms["downstream_data"] = (time.monotonic() - t0) * 1000
        if reply in (R.DOWNSTREAM_LOST, R.DOWNSTREAM_UNAVAILABLE):
            reply = reply.with_ref(txn.ref)  # ours: the downstream gave no reply
        else:
            txn.downstream_reply = reply
        self._finish(txn, reply, "data")
        if reply.is_positive:
            conn.errors = 0
            await self.reply(reply)
        else:
            await self.error(reply)

    def _prepare(
        self, conn: Connection, txn: Transaction, message: bytes, hits: list[Hit], verdict: Verdict
    ) -> bytes:
        gen = self.gen
        pol = gen.config.policy
        message, _ = strip_own_auth_results(message, gen.authserv_id)
        if verdict.action == Action.TAG and pol.tag_subject_prefix:
            message = add_subject_prefix(message, pol.tag_subject_prefix)
        extra = [received_header(conn, txn, gen.config.server.hostname)]
        for name, value in txn.notes.get("add_headers", ()):
            extra.append(header(name, value))
        if pol.header_symbols:
            symbols = " ".join(h.render() for h in hits) or "none"
            action = verdict.action.label
            if verdict.would_be != verdict.action:
                action += f" (would be {verdict.would_be.label})"
            extra.append(header(pol.header_symbols, f"{action}; score={verdict.score:g}; {symbols}"))
        if pol.header_score:
            extra.append(header(pol.header_score, f"{verdict.score:g}"))
        if verdict.action == Action.TAG and pol.tag_header:
            extra.append(header(pol.tag_header, "YES"))
        return b"".join(extra) + message

    # -- the rest of the verbs ----------------------------------------------------------------

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self.error(R.PARAM_SYNTAX)
            return
        await self._abort_txn("rset")
        await self.reply(R.OK)

    async def _abort_txn(self, why: str) -> None:
        txn = self.txn
        if txn is None:
            return
        self._finish(txn, None, why)
        if self.downstream is not None:
            await self.downstream.rset()

    async def smtp_NOOP(self, arg: str) -> None:
        await self.reply(R.OK)

    async def smtp_QUIT(self, arg: str) -> None:
        self._close_reason = self._close_reason or "quit"
        await self.reply(R.BYE)
        self._shut()

    async def smtp_VRFY(self, arg: str) -> None:
        await self.reply(R.NO_VRFY)

    async def smtp_EXPN(self, arg: str) -> None:
        await self.error(R.NOT_IMPLEMENTED)

    async def smtp_HELP(self, arg: str) -> None:
        await self.reply(R.HELP)

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
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, ctx, waiter, server_side=True)
        self._original_transport = self.transport
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await asyncio.wait_for(waiter, 30)
        except Exception:
            self._close_reason = "tls_failed"
            self._shut()
            if self._original_transport is not None:
                self._original_transport.close()
            return
        ssl_obj = self.transport.get_extra_info("ssl_object")
        conn.tls = f"{ssl_obj.version()} {ssl_obj.cipher()[0]}" if ssl_obj else "TLS"
        # RFC 3207 4.2: forget what the client told us before TLS.
        await self._abort_txn("starttls")
        conn.helo = ""
        conn.esmtp = False
        conn.helo_hits = []
        self._pending.clear()

    # -- logging --------------------------------------------------------------------------------

    def _record(self, txn: Transaction, verdict: Verdict) -> None:
        txn.action = verdict.action.label
        txn.would_be = verdict.would_be.label
        txn.score = verdict.score

    def _finish(self, txn: Transaction, reply: Reply | None, stage: str) -> None:
        """End a transaction and write its canonical log line."""
        self.txn = None
        conn = self.conn
        assert conn is not None
        txn.final_reply = reply
        hits = conn.hits + txn.hits + _merge_rcpt_hits(self.rcpt_hits, [r.address for r in txn.rcpts])
        if reply is None:
            outcome = "aborted"
        elif reply.is_positive:
            outcome = "delivered"
        elif reply.is_temporary:
            outcome = "deferred"
        else:
            outcome = "rejected"
        fields: dict[str, Any] = {
            "ref": txn.ref,
            "client_ip": conn.ip_str,
            "client_port": conn.port,
            "client_name": conn.reverse_name or None,
            "helo": conn.helo,
            "tls": conn.tls or None,
            "mail_from": txn.mail_from,
            "rcpts": [{"to": r.address, "reply": str(r.reply) if r.reply else None} for r in txn.rcpts],
            "outcome": outcome,
            "stage": stage,
            "action": txn.action or "accept",
            "score": round(sum(h.score for h in hits), 3),
            "symbols": [h.render() for h in hits],
            "reply": str(reply) if reply else None,
            "downstream_reply": str(txn.downstream_reply) if txn.downstream_reply else None,
            "size": txn.size,
            "elapsed_ms": round((time.monotonic() - txn.started) * 1000, 2),
            "timings_ms": {k: round(v, 2) for k, v in txn.stage_ms.items()},
        }
        if txn.would_be and txn.would_be != txn.action:
            fields["would_be"] = txn.would_be
        if self.gen.config.server.mode == "observe":
            fields["mode"] = "observe"
        log.info("transaction", **fields)
        txn.notes["hits"] = hits
        for cb in self.gen.services.on_transaction:
            cb(conn, txn, outcome)

    def _log_connection(self, conn: Connection) -> None:
        fields: dict[str, Any] = {
            "ref": conn.conn_ref,
            "client_ip": conn.ip_str,
            "client_port": conn.port,
            "helo": conn.helo or None,
            "tls": conn.tls or None,
            "transactions": conn.txn_count,
            "errors": conn.errors,
            "closed": self._close_reason or "closed",
            "elapsed_ms": round((time.monotonic() - conn.started) * 1000, 2),
        }
        if conn.peer[0] != conn.ip_str:
            fields["proxy_peer"] = conn.peer[0]
        if conn.hits:
            fields["symbols"] = [h.render() for h in conn.hits]
        if conn.rejected is not None:
            fields["reply"] = str(conn.rejected)
        helo_verdict = conn.notes.get("helo_verdict")
        if helo_verdict is not None and helo_verdict.action >= Action.TEMPFAIL:
            fields["helo_action"] = helo_verdict.action.label
        log.info("connection", **fields)


def _merge_rcpt_hits(per_rcpt: dict[str, list[Hit]], rcpts: list[str]) -> list[Hit]:
    """Union of the recipients' symbols, once each (a symbol is not scored per recipient)."""
    seen: dict[str, Hit] = {}
    for rcpt in rcpts:
        for h in per_rcpt.get(rcpt, ()):
            old = seen.get(h.name)
            if old is None or h.score > old.score:
                seen[h.name] = h
    return list(seen.values())


def _normalize_newlines(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


SmtpSession.COMMANDS = {
    name[5:]: getattr(SmtpSession, name) for name in dir(SmtpSession) if name.startswith("smtp_")
}
