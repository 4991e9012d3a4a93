"""The downstream SMTP session (aiosmtplib), one per client session, reused across its transactions.

Opened at the client's first MAIL (or at connect, by config). EHLO, then STARTTLS per
``relay.tls``, then per transaction XCLIENT (when advertised and allowed, and only when the
client identity changed since the last one) followed by a new EHLO as the XCLIENT spec
requires. MAIL and RCPT are sent raw with ``execute_command`` so the client gets the
downstream's exact reply for every recipient; parameters are passed on only when the
downstream advertises their extension (SIZE, BODY=8BITMIME, SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT).

Protocol state (:class:`State`, see docs/RELAY.md "Downstream session states"): set *before*
each command is written and moved on only by that command's reply, so the state never claims
more than the downstream has confirmed:

- ``CLOSED``: no connection. ``open()`` connects.
- ``IDLE``: connected, no transaction, no reply outstanding. The only state in which the
  session may be pooled or given a MAIL.
- ``MAIL``: MAIL written; the downstream may hold a sender and recipients. Its refusal goes
  back to ``IDLE``; RCPT stays here; ``rset()`` (RSET, 250) goes back to ``IDLE``.
- ``DATA``: DATA written. A final 250 goes back to ``IDLE``; DATA refused (no 354) or the
  message refused (a final 4xx/5xx: Postfix may keep the envelope) goes back to ``MAIL``
  and is followed at once by RSET.
- ``BROKEN``: a reply never came (timeout, connection lost, task cancelled, unexpected
  error): what the downstream holds is unknown, so the connection is aborted at once (no
  command can be sent on it, no late reply can be paired with a later command) and the session
  is never reused. ``open()`` replaces it with a new connection.

``busy`` is True while a command's reply is outstanding; a cancellation in that window (the
client dropped while we waited) breaks the session, whatever the state was.

Failure mapping (the client always gets a 4xx, nothing is reported delivered):
- connect refused / greeting timeout / EHLO failure  -> 451 4.4.1
- reply timeout, connection lost, 421 at any stage   -> 451 4.4.2 (session broken; the
  next MAIL reconnects; the downstream's 421 text is logged as ``downstream_closing``)
- TLS required but not offered or handshake failed   -> 451 4.7.5
- ``relay.xclient_mode = "required"`` and XCLIENT not offered or refused -> 451 4.7.0, no MAIL
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Awaitable
from typing import TypeVar

import aiosmtplib
import structlog
from aiosmtplib import SMTPException, SMTPResponse, SMTPResponseException

from proxy.config.fields import parse_hostport
from proxy.config.schema import RelayConfig
from proxy.observability import metrics
from proxy.relay.base import ClientIdentity
from proxy.relay.encode import MAIL_PARAM_EXT, RCPT_PARAM_EXT, dot_stuff, params_for, xtext
from proxy.replies import (
    DOWNSTREAM_LOST,
    DOWNSTREAM_NO_SMTPUTF8,
    DOWNSTREAM_TLS,
    DOWNSTREAM_UNAVAILABLE,
    DOWNSTREAM_XCLIENT,
    Reply,
    from_downstream,
)

log = structlog.get_logger("spamgate")
T = TypeVar("T")


class State(enum.Enum):
    CLOSED = "closed"
    IDLE = "idle"
    MAIL = "mail"
    DATA = "data"
    BROKEN = "broken"


class _Lost(Exception):
    """A command's reply never came: the session is broken (already aborted)."""


class SmtpDownstream:
    def __init__(self, cfg: RelayConfig, helo_name: str, address: str = "") -> None:
        self.cfg = cfg
        self.address = address or cfg.downstream
        self.host, self.port = parse_hostport(self.address, "relay.downstream")
        self.helo_name = helo_name
        self.client: aiosmtplib.SMTP | None = None
        self.caps: frozenset[str] = frozenset()
        self.state = State.CLOSED
        self.busy = False  # a command was written and its reply has not been read yet
        self.uses = 0  # client sessions served
        self.reused = False  # taken from the pool: may have been closed by the server meanwhile
        self._xclient_sent: ClientIdentity | None = None
        self._tls_ctx: ssl.SSLContext | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return self.caps

    @property
    def alive(self) -> bool:
        return self.client is not None and self.client.is_connected

    @property
    def idle(self) -> bool:
        """Connected, outside any transaction, no reply outstanding: safe to hand to anyone."""
        return self.state is State.IDLE and not self.busy and self.alive

    @property
    def in_txn(self) -> bool:
        """The downstream may hold a sender or recipients (kept for callers of the old flag)."""
        return self.state in (State.MAIL, State.DATA)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls_ctx is None:
            ctx = ssl.create_default_context(cafile=self.cfg.tls_ca_file or None)
            if not self.cfg.tls_server_name:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._tls_ctx = ctx
        return self._tls_ctx

    # -- the one way a command is exchanged -------------------------------------------------

    async def _exchange(self, state: State, command: Awaitable[T]) -> T:
        """Await one command's reply with ``state`` set before it is written.

        Anything but a plain reply (timeout, lost connection, cancellation, a reply aiosmtplib
        raises for, a bug) leaves the downstream in a state we cannot vouch for: the connection
        is aborted on the spot, synchronously, so even a cancelled task leaves nothing that
        could be reused. Raises :class:`_Lost` (or re-raises SMTPResponseException and the
        cancellation).
        """
        self.state = state
        self.busy = True
        try:
            result = await command
        except BaseException as exc:
            self._abort()
            if isinstance(exc, SMTPResponseException) or not isinstance(exc, Exception):
                raise  # a junk or refused greeting reply; CancelledError: aborted, then propagate
            raise _Lost(repr(exc)) from exc
        self.busy = False
        return result

    def _abort(self) -> None:
        """BROKEN: drop the connection now (no QUIT: a late reply must never be read)."""
        self.state = State.BROKEN
        self.busy = False
        client, self.client = self.client, None
        self._xclient_sent = None
        if client is not None:
            client.close()

    # -- opening ------------------------------------------------------------------------------

    async def open(self) -> Reply | None:
        if self.alive and self.state is not State.BROKEN:
            return None
        await self.close()
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.helo_name,
            timeout=self.cfg.command_timeout,
            start_tls=False,
        )
        try:
            await client.connect(timeout=self.cfg.connect_timeout)
            await client.ehlo()
            if self.cfg.tls != "off":
                failure = await self._starttls(client)
                if failure is not None:
                    client.close()
                    return failure
        except (SMTPException, OSError, TimeoutError):
            client.close()
            return DOWNSTREAM_UNAVAILABLE
        except BaseException:
            client.close()  # cancelled while opening: nothing may stay connected
            raise
        self.client = client
        self.caps = frozenset(client.esmtp_extensions)
        self._xclient_sent = None
        self.state = State.IDLE
        self.busy = False
        return None

    async def _starttls(self, client: aiosmtplib.SMTP) -> Reply | None:
        if not client.supports_extension("starttls"):
            return DOWNSTREAM_TLS if self.cfg.tls == "required" else None
        try:
            await client.starttls(
                tls_context=self._tls_context(),
                server_hostname=self.cfg.tls_server_name or self.host,
            )
            await client.ehlo()
        except (SMTPException, ssl.SSLError, OSError):
            return DOWNSTREAM_TLS if self.cfg.tls == "required" else DOWNSTREAM_UNAVAILABLE
        return None

    # -- XCLIENT ------------------------------------------------------------------------------

    async def _xclient(self, client: aiosmtplib.SMTP, who: ClientIdentity) -> Reply | None:
        """XCLIENT for ``who`` when needed; None to go on with MAIL, else the client's reply."""
        cfg = self.cfg
        required = cfg.xclient_mode == "required"
        if self._xclient_sent == who:
            return None
        if not cfg.xclient or "xclient" not in self.caps:
            if required:
                why = "not_offered" if cfg.xclient else "disabled"
                log.warning("xclient_unavailable", downstream=self.address, reason=why, client_ip=who.addr)
                metrics.xclient_refused(why)
                return DOWNSTREAM_XCLIENT
            return None
        addr = f"IPV6:{who.addr}" if ":" in who.addr else who.addr  # Postfix XCLIENT_README
        attrs = [
            f"ADDR={xtext(addr)}",
            f"NAME={xtext(who.name) if who.name else '[UNAVAILABLE]'}",
            f"HELO={xtext(who.helo) if who.helo else '[UNAVAILABLE]'}",
            f"PROTO={who.proto}",
        ]
        supported = client.esmtp_extensions.get("xclient", "").upper().split()
        if supported:
            attrs = [a for a in attrs if a.split("=", 1)[0] in supported]
        response = await self._exchange(
            State.IDLE, client.execute_command(b"XCLIENT", *(a.encode() for a in attrs))
        )
        if response.code == 421:
            self._abort()
            raise _Lost(str(response))
        if response.code != 220:
            # Not authorised: the downstream would judge the mail by spamgate's own address
            # (an open relay if spamgate is in its mynetworks). Never silent.
            reply = str(from_downstream(response.code, response.message))
            log.warning(
                "xclient_refused", downstream=self.address, downstream_reply=reply, client_ip=who.addr
            )
            metrics.xclient_refused("refused")
            # The downstream keeps its previous XCLIENT identity (if any) after a refusal:
            # do not let it stand for this client.
            if self._xclient_sent is not None:
                self._abort()
                return DOWNSTREAM_XCLIENT if required else DOWNSTREAM_LOST
            if required:
                await self.close()  # the next try gets a new session (maybe a fixed downstream)
                return DOWNSTREAM_XCLIENT
            self.caps = self.caps - {"xclient"}  # once per downstream session is enough
            return None
        # The downstream forgets the EHLO after XCLIENT: greet again.
        self._xclient_sent = None
        await self._exchange(State.IDLE, client.ehlo())
        self._xclient_sent = who
        return None

    # -- the transaction ----------------------------------------------------------------------

    async def mail(self, sender: str, params: dict[str, str | None], identity: ClientIdentity) -> Reply:
        if self.reused:
            # First command on a pooled session: if the server dropped it while idle,
            # reconnect once and retry (nothing has been sent on it for this client yet).
            self.reused = False
            reply = await self._mail(sender, params, identity)
            if reply is not DOWNSTREAM_LOST:
                return reply
        return await self._mail(sender, params, identity)

    async def _mail(self, sender: str, params: dict[str, str | None], identity: ClientIdentity) -> Reply:
        if self.state in (State.MAIL, State.DATA) and not self.busy:
            await self.rset()  # a transaction the caller left open: never a nested MAIL
        failure = await self.open()
        if failure is not None:
            return failure
        client = self.client
        if client is None or not self.idle:
            self._abort()
            return DOWNSTREAM_LOST
        if params.get("SMTPUTF8", "") is None and "smtputf8" not in self.caps:
            return DOWNSTREAM_NO_SMTPUTF8
        try:
            refused = await self._xclient(client, identity)
            if refused is not None:
                return refused
            arg = b"FROM:<" + sender.encode("utf-8", "surrogateescape") + b">"
            command = client.execute_command(b"MAIL", arg, *params_for(params, MAIL_PARAM_EXT, self.caps))
            response = await self._exchange(State.MAIL, command)
        except SMTPResponseException as exc:
            self._abort()
            return _temporary(exc.code, exc.message)
        except (_Lost, ValueError):
            self._abort()
            return DOWNSTREAM_LOST
        if response.code != 250:
            self.state = State.IDLE  # refused: no transaction downstream
        return self._reply(response.code, response.message)

    async def rcpt(self, rcpt: str, params: dict[str, str | None]) -> Reply:
        client = self.client
        if client is None or self.state is not State.MAIL or self.busy:
            return DOWNSTREAM_LOST
        try:
            arg = b"TO:<" + rcpt.encode("utf-8", "surrogateescape") + b">"
            command = client.execute_command(b"RCPT", arg, *params_for(params, RCPT_PARAM_EXT, self.caps))
            response = await self._exchange(State.MAIL, command)
        except (SMTPResponseException, _Lost, ValueError):
            self._abort()
            return DOWNSTREAM_LOST
        return self._reply(response.code, response.message)

    async def data(self, message: bytes) -> Reply:
        client = self.client
        if client is None or self.state is not State.MAIL or self.busy:
            return DOWNSTREAM_LOST
        try:
            start, final = await self._transfer(client, message)
        except (SMTPResponseException, _Lost, ValueError):
            self._abort()
            return DOWNSTREAM_LOST
        if final is None:
            # DATA refused: the downstream still holds the sender and recipients.
            self.state = State.MAIL
            if start.code == 421:
                self._abort()
                return _temporary(start.code, start.message)
            await self.rset()
            return from_downstream(start.code, start.message)
        if final.code == 250:
            self.state = State.IDLE
            return from_downstream(final.code, final.message)
        if final.code == 421:
            self._abort()
            return _temporary(final.code, final.message)
        # RFC 5321 says a refused message ends the transaction, but Postfix keeps the envelope
        # after an smtpd_end_of_data_restrictions refusal (the next MAIL gets "503 5.5.1 Error:
        # nested MAIL command"): reset, so the session is idle whatever the downstream thinks.
        self.state = State.MAIL
        await self.rset()
        return from_downstream(final.code, final.message)

    async def _transfer(
        self, client: aiosmtplib.SMTP, message: bytes
    ) -> tuple[SMTPResponse, SMTPResponse | None]:
        """DATA and the message; returns (reply to DATA, final reply or None when DATA was refused).

        Dot-stuffing by ``bytes.replace`` (about 1 ms/MB instead of aiosmtplib's ~8), exact for
        CRLF-only content. Content with bare CR or LF (the session normally rejects or
        normalises it) gets every line ending made CRLF first, as aiosmtplib's ``data()``
        does, so a bare LF can never end the data early downstream (SMTP smuggling).
        """
        proto = client.protocol
        lock = proto._command_lock if proto is not None else None
        if proto is None or lock is None:
            raise _Lost("not connected")
        stuffed = dot_stuff(message)

        # The same steps as aiosmtplib's execute_data_command (pinned <6; see the contract test).
        async def command() -> SMTPResponse:
            async with lock:
                proto._response_pending = True
                proto.write(b"DATA\r\n")
                return await proto.read_response(timeout=self.cfg.command_timeout)

        async def content() -> SMTPResponse:
            async with lock:
                proto._response_pending = True
                proto.write(stuffed)  # two writes: no copy of the message to add the end
                proto.write(b".\r\n")
                return await proto.read_response(timeout=self.cfg.data_timeout)

        start = await self._exchange(State.DATA, command())
        if start.code != 354:
            return start, None
        return start, await self._exchange(State.DATA, content())

    def _reply(self, code: int, message: str) -> Reply:
        if code == 421:  # the downstream is closing: the session is gone
            self._abort()
            return _temporary(code, message)
        return from_downstream(code, message)

    async def rset(self) -> None:
        """End any transaction: RSET and its 250 make the session IDLE, anything else closes it."""
        client = self.client
        if client is None or (self.state in (State.CLOSED, State.IDLE) and not self.busy):
            return
        if self.busy or self.state is State.BROKEN:
            self._abort()
            return
        try:
            response = await self._exchange(self.state, client.execute_command(b"RSET"))
        except (SMTPResponseException, _Lost):
            self._abort()
            return
        if response.code == 250:
            self.state = State.IDLE
        else:
            self._abort()

    async def close(self) -> None:
        """QUIT when the session is known to be at a command boundary, else just drop it."""
        client, self.client = self.client, None
        clean = not self.busy and self.state is not State.BROKEN
        self.state = State.CLOSED
        self.busy = False
        self._xclient_sent = None
        if client is None:
            return
        try:
            if clean and client.is_connected:
                await client.quit(timeout=2)
        except (SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()  # also when cancelled while waiting for QUIT's reply


def _temporary(code: int, message: str) -> Reply:
    """A downstream failure must not become a permanent error for the client.

    A downstream 421 closes the downstream session, not the client's: the client gets
    451 4.4.2 (its session goes on; the next MAIL reconnects) and the 421 goes to the log.
    """
    if code == 421:
        log.warning("downstream_closing", reply=str(from_downstream(code, message)))
        return DOWNSTREAM_LOST
    if 400 <= code < 500:
        return from_downstream(code, message)
    return DOWNSTREAM_LOST
