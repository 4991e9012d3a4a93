"""One message's way through the stages: HELO -> MAIL -> RCPT -> DATA -> relay.

``MailFlow`` holds the client's transaction and its downstream session. At each stage it runs
the stage's checks, asks the policy for a verdict, and either refuses (our reply, with the
reference id) or relays the command and answers with the downstream's own reply. The wire
(:class:`Wire`, the protocol instance) only reads and writes bytes; the flow never touches
a socket.

Promises kept here:
- Nothing reaches the downstream that the policy refused, and the client gets 250 to DATA
  only when the downstream gave it (the relay maps every failure to a 4xx).
- What a client controls is bounded: recipients past ``limits.max_recipients`` are answered
  452 and not kept; past ``limits.recipient_overshoot`` more, each counts as an error.
- A message that holds NUL, bare CR/LF, a too long line or a too large header is refused (or
  normalised, per ``limits.bare_newline``) before any check sees it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol

from proxy import replies as R
from proxy.checks.base import CheckContext
from proxy.checks.core_symbols import (
    BARE_NEWLINE,
    HEADER_TOO_LARGE,
    LINE_TOO_LONG,
    NUL_IN_DATA,
    SIZE_EXCEEDED,
    TOO_MANY_RCPTS,
)
from proxy.model import Action, Connection, Hit, RcptResult, Reply, Stage, SymbolDef, Transaction, Verdict
from proxy.policy.domains import DomainPolicy
from proxy.relay.base import ClientIdentity
from proxy.session.envelope import declared_size, mail_params_problem, rcpt_params_problem
from proxy.session.outgoing import prepare_message
from proxy.session.routing import SPLIT_REPLIES, SessionRelay
from proxy.session.runtime import Generation
from proxy.session.txlog import log_transaction, merge_rcpt_hits
from proxy.smtp import data as wire_data
from proxy.smtp.address import PathError, parse_path


class Wire(Protocol):
    """What the flow needs of the connection."""

    async def reply(self, r: Reply) -> None: ...

    async def error(self, r: Reply) -> None: ...

    async def read_data(self, limit: int) -> wire_data.DataReader: ...

    def release_data(self) -> None: ...

    def reset_timeout(self, seconds: float | None = None) -> None: ...

    def close_after(self, reason: str) -> None: ...


class MailFlow:
    def __init__(self, wire: Wire, gen: Generation, conn: Connection) -> None:
        self.wire = wire
        self.gen = gen
        self.conn = conn
        self.txn: Transaction | None = None
        self.relay = SessionRelay(gen.router)
        self.rcpt_hits: dict[str, list[Hit]] = {}
        self._too_many: Reply | None = None
        self.txn_policy: DomainPolicy | None = None  # the policy of the accepted recipients

    # -- verdict helpers -------------------------------------------------------------------

    def _decide(self, hits: list[Hit], stage: Stage) -> Verdict:
        return self.gen.policy.decide(hits, stage)

    def _protocol_hit(self, sym: SymbolDef, evidence: str) -> Hit:
        return self.gen.policy.score(sym.hit(evidence), "session", observe=False)

    def _ctx(self, stage: Stage, hits: list[Hit], **kw: Any) -> CheckContext:
        return CheckContext(
            stage,
            self.conn,
            self.txn,
            fired=frozenset(h.name for h in hits),
            score=sum(h.score for h in hits),
            **kw,
        )

    # -- downstream ------------------------------------------------------------------------

    async def open_downstream(self) -> None:
        """``relay.connect_at = "connect"``: open the downstream session with the greeting."""
        await self.relay.open()

    def release(self) -> None:
        """The client session is over: abort an open transaction, give the downstream back."""
        if self.txn is not None:
            self.finish(self.txn, None, "aborted")
        self.relay.release()

    def _identity(self) -> ClientIdentity:
        conn = self.conn
        return ClientIdentity(
            conn.ip_str, conn.port, conn.reverse_name, conn.helo, "ESMTP" if conn.esmtp else "SMTP"
        )

    # -- HELO / EHLO -----------------------------------------------------------------------

    async def greet(self, arg: str, *, esmtp: bool) -> None:
        conn, gen = self.conn, self.gen
        if not arg:
            await self.wire.error(R.HELO_SYNTAX)
            return
        await self.abort("helo")
        conn.helo = arg.split(maxsplit=1)[0][:255]
        conn.esmtp = esmtp
        conn.helo_hits = []
        if gen.pipeline.has_stage(Stage.HELO):
            conn.helo_hits = await gen.pipeline.run(Stage.HELO, self._ctx(Stage.HELO, conn.connect_hits))
            verdict = self._decide(conn.hits, Stage.HELO)
            conn.notes["helo_verdict"] = verdict
            if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
                conn.helo = ""
                await self.wire.error(verdict.reply.with_ref(conn.conn_ref))
                return
        cfg = gen.config
        if not esmtp:
            await self.wire.reply(R.helo_ok(cfg.server.hostname))
            return
        lines = [cfg.server.hostname, "PIPELINING", f"SIZE {cfg.limits.max_message_size}", "8BITMIME"]
        if cfg.smtp.advertise_smtputf8:
            lines.append("SMTPUTF8")
        lines.append("ENHANCEDSTATUSCODES")
        if gen.tls_context is not None and not conn.tls:
            lines.append("STARTTLS")
        if cfg.smtp.advertise_dsn:
            lines.append("DSN")
        await self.wire.reply(R.ehlo_ok(lines))

    # -- MAIL ------------------------------------------------------------------------------

    async def mail(self, arg: str) -> None:
        conn, gen, wire = self.conn, self.gen, self.wire
        cfg = gen.config
        if not conn.helo:
            await wire.error(R.BAD_SEQUENCE_HELO)
            return
        if cfg.tls.require and gen.tls_context is not None and not conn.tls:
            await wire.error(R.TLS_REQUIRED)
            return
        if self.txn is not None:
            await wire.error(R.NESTED_MAIL)
            return
        if conn.txn_count >= cfg.limits.max_transactions:
            await wire.reply(R.TOO_MANY_TRANSACTIONS)
            wire.close_after("too_many_transactions")
            return
        try:
            path = parse_path(arg, "FROM")
        except PathError:
            await wire.error(R.SENDER_SYNTAX)
            return
        params = path.params
        problem = mail_params_problem(params, cfg)
        if problem is not None:
            await wire.error(problem)
            return
        smtputf8 = "SMTPUTF8" in params
        if not smtputf8 and not path.address.isascii():
            await wire.error(R.NON_ASCII_WITHOUT_SMTPUTF8)
            return
        conn.junk = 0
        txn = Transaction(
            conn.next_ref(), path.address, params, smtputf8=smtputf8, body=(params.get("BODY") or "").upper()
        )
        self.txn = txn
        self.rcpt_hits = {}
        self._too_many = None
        self.txn_policy = None
        size = declared_size(params)
        if size > cfg.limits.max_message_size:
            txn.hits.append(self._protocol_hit(SIZE_EXCEEDED, f"declared={size}"))
        if gen.pipeline.has_stage(Stage.MAIL):
            txn.hits += await gen.pipeline.run(Stage.MAIL, self._ctx(Stage.MAIL, conn.hits + txn.hits))
        verdict = self._decide(conn.hits + txn.hits, Stage.MAIL)
        self._record(txn, verdict)
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            reply = verdict.reply.with_ref(txn.ref)
            self.finish(txn, reply, "mail")
            await wire.error(reply)
            return
        t0 = time.monotonic()
        reply = await self.relay.mail(txn, self._identity())
        txn.stage_ms["downstream_mail"] = (time.monotonic() - t0) * 1000
        if not reply.is_positive:
            if (
                reply.code == 451 and reply.enhanced.startswith("4.4.")
            ) or reply in R.OWN_DOWNSTREAM_FAILURES:
                reply = reply.with_ref(txn.ref)
            self.finish(txn, reply, "mail")
            await wire.error(reply)
            return
        await wire.reply(reply)

    # -- RCPT ------------------------------------------------------------------------------

    async def rcpt(self, arg: str) -> None:
        conn, txn, wire, gen = self.conn, self.txn, self.wire, self.gen
        if txn is None:
            await wire.error(R.BAD_SEQUENCE_MAIL)
            return
        try:
            path = parse_path(arg, "TO")
        except PathError:
            await wire.error(R.RCPT_SYNTAX)
            return
        problem = rcpt_params_problem(path.params)
        if problem is not None:
            await wire.error(problem)
            return
        if not txn.smtputf8 and not path.address.isascii():
            await wire.error(R.NON_ASCII_WITHOUT_SMTPUTF8)
            return
        limits = gen.config.limits
        if len(txn.accepted) >= limits.max_recipients:
            # RFC 5321 4.5.3.1.10: 452, not kept, not checked, not relayed. Past the overshoot
            # limit each one also counts as an error (Postfix's recipient overshoot limit).
            txn.refused += 1
            reply = self._too_many_reply(txn)
            if txn.refused > limits.recipient_overshoot:
                await wire.error(reply)
            else:
                await wire.reply(reply)
            return
        result = RcptResult(path.address, path.params)
        dpol = gen.domain_policies.for_rcpt(path.address)
        if self.txn_policy is not None and dpol is not self.txn_policy:
            # One policy per transaction: the DATA verdict and the tag must hold for every recipient.
            result.reply = R.OTHER_POLICY.with_ref(txn.ref)
            txn.rcpts.append(result)
            await wire.reply(result.reply)
            return
        hits: list[Hit] = []
        if gen.pipeline.has_stage(Stage.RCPT):
            base = conn.hits + txn.hits
            hits = await gen.pipeline.run(Stage.RCPT, self._ctx(Stage.RCPT, base, rcpt=path.address))
            if not dpol.greylist:
                hits = [replace(h, observe=True) if h.name == "GREYLISTED" else h for h in hits]
        verdict = dpol.policy.decide(conn.hits + txn.hits + hits, Stage.RCPT)
        txn.rcpts.append(result)
        self.rcpt_hits[path.address] = hits
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            result.reply = verdict.reply.with_ref(txn.ref)
            result.refused_by = verdict.action.label
            await wire.error(result.reply)
            return
        reply = await self.relay.rcpt(txn, path.address, path.params)
        if reply in R.OWN_DOWNSTREAM_FAILURES or reply in SPLIT_REPLIES:
            reply = reply.with_ref(txn.ref)
        else:  # the downstream's own answer: learnt from (recipient cache, proxy.checks.rcpt)
            for cb in gen.services.on_rcpt_reply:
                cb(conn, txn, path.address, reply)
        result.reply = reply
        if reply in SPLIT_REPLIES:
            await wire.reply(reply)  # not the client's error: it sends it again in a new transaction
        elif reply.is_positive:
            result.accepted = True
            txn.accepted.append(path.address)
            self.txn_policy = dpol
            await wire.reply(reply)
        else:
            await wire.error(reply)

    def _too_many_reply(self, txn: Transaction) -> Reply:
        if self._too_many is None:
            hit = self._protocol_hit(TOO_MANY_RCPTS, str(self.gen.config.limits.max_recipients))
            verdict = self._decide([hit], Stage.RCPT)
            self._too_many = (verdict.reply or R.TOO_MANY_RCPTS).with_ref(txn.ref)
            txn.notes["too_many_rcpts"] = hit
        return self._too_many

    # -- DATA ------------------------------------------------------------------------------

    async def data(self, arg: str) -> None:
        conn, txn, wire, gen = self.conn, self.txn, self.wire, self.gen
        if txn is None:
            await wire.error(R.BAD_SEQUENCE_MAIL)
            return
        if arg:
            await wire.error(R.PARAM_SYNTAX)
            return
        if not txn.rcpts and not txn.refused:
            await wire.error(R.BAD_SEQUENCE_RCPT)
            return
        if not txn.accepted:
            await wire.error(R.NO_VALID_RCPT)
            return
        cfg = gen.config
        await wire.reply(R.START_DATA)
        wire.reset_timeout(cfg.limits.data_timeout)
        t0 = time.monotonic()
        try:
            reader = await wire.read_data(cfg.limits.max_message_size)
            txn.size = reader.size
            txn.stage_ms["receive"] = (time.monotonic() - t0) * 1000
            wire.reset_timeout(cfg.relay.data_timeout + cfg.policy.stage_timeout + 30)
            if reader.over_budget:
                reply = R.INFLIGHT_BUDGET.with_ref(txn.ref)
                self.finish(txn, reply, "data")
                await self._rset_downstream()
                await wire.reply(reply)
                return
            await self._data_stage(conn, txn, reader)
        finally:
            wire.release_data()

    def _message_problem(self, message: bytes) -> tuple[bytes, Hit | None]:
        limits = self.gen.config.limits
        max_line, max_header = limits.text_line_length, limits.max_header_size
        found = wire_data.inspect(message, max_line=max_line, max_header=max_header)
        if found.nul or found.bare_newline:
            if limits.bare_newline != "normalize":
                if found.nul:
                    return message, self._protocol_hit(NUL_IN_DATA, f"nul={found.nul}")
                evidence = f"bare_lf={found.bare_lf} bare_cr={found.bare_cr}"
                return message, self._protocol_hit(BARE_NEWLINE, evidence)
            # After unstuffing: a dot after a bare CR/LF or a NUL is content, not a stuffing dot.
            message = wire_data.normalize(message)
            found = wire_data.inspect(message, max_line=max_line, max_header=max_header)
        if found.long_line:
            return message, self._protocol_hit(LINE_TOO_LONG, f"longest>={found.long_line}")
        if found.header_size:
            return message, self._protocol_hit(HEADER_TOO_LARGE, f"header>{max_header}")
        return message, None

    async def _rset_downstream(self) -> None:
        await self.relay.rset()

    async def _reject_data(self, txn: Transaction, reply: Reply) -> None:
        self.finish(txn, reply, "data")
        await self._rset_downstream()
        await self.wire.error(reply)

    async def _data_stage(self, conn: Connection, txn: Transaction, reader: wire_data.DataReader) -> None:
        """Checks, verdict, relay. The message exists once: taken from the reader, unstuffed in
        place of the wire form, replaced by the relayed form (only this frame holds it)."""
        gen = self.gen
        if reader.overflow:
            problem: Hit | None = self._protocol_hit(
                SIZE_EXCEEDED, f"size>{gen.config.limits.max_message_size}"
            )
            message = b""
        else:
            message, reader.message = wire_data.unstuff(reader.message), b""
            message, problem = self._message_problem(message)
        if problem is not None:
            txn.hits.append(problem)
            verdict = self._decide([problem], Stage.DATA)
            self._record(txn, verdict)
            await self._reject_data(txn, (verdict.reply or R.SIZE_EXCEEDED).with_ref(txn.ref))
            return
        hits = conn.hits + txn.hits + merge_rcpt_hits(self.rcpt_hits, txn.accepted)
        if gen.pipeline.has_stage(Stage.DATA):
            t0 = time.monotonic()
            data_hits = await gen.pipeline.run(Stage.DATA, self._ctx(Stage.DATA, hits, message=message))
            txn.stage_ms["data_checks"] = (time.monotonic() - t0) * 1000
            txn.hits += data_hits
            hits += data_hits
        dpol = self.txn_policy or gen.domain_policies.default
        verdict = dpol.policy.decide(hits, Stage.DATA)
        self._record(txn, verdict)
        txn.notes["policy"] = dpol.name
        if verdict.action >= Action.TEMPFAIL and verdict.reply is not None:
            await self._reject_data(txn, verdict.reply.with_ref(txn.ref))
            return
        message = prepare_message(self.conn, txn, self.gen, message, hits=hits, verdict=verdict, dpol=dpol)
        t0 = time.monotonic()
        reply = await self.relay.data(message)
        del message
        txn.stage_ms["downstream_data"] = (time.monotonic() - t0) * 1000
        if reply in R.OWN_DOWNSTREAM_FAILURES:
            reply = reply.with_ref(txn.ref)  # ours: the downstream gave no reply
        else:
            txn.downstream_reply = reply
        self.finish(txn, reply, "data")
        if reply.is_positive:
            conn.errors = 0
            await self.wire.reply(reply)
        else:
            await self.wire.error(reply)

    # -- RSET and the end of a transaction ------------------------------------------------

    async def abort(self, why: str) -> None:
        txn = self.txn
        if txn is None:
            return
        self.finish(txn, None, why)
        await self._rset_downstream()

    def _record(self, txn: Transaction, verdict: Verdict) -> None:
        txn.action = verdict.action.label
        txn.would_be = verdict.would_be.label
        txn.score = verdict.score

    def finish(self, txn: Transaction, reply: Reply | None, stage: str) -> None:
        """End a transaction and write its canonical log line."""
        self.txn = None
        conn = self.conn
        txn.final_reply = reply
        hits = conn.hits + txn.hits + merge_rcpt_hits(self.rcpt_hits, [r.address for r in txn.rcpts])
        too_many = txn.notes.get("too_many_rcpts")
        if too_many is not None:
            hits.append(too_many)
        observe = self.gen.config.server.mode == "observe"
        outcome = log_transaction(conn, txn, hits, reply, stage, observe=observe)
        txn.notes["hits"] = hits
        for cb in self.gen.services.on_transaction:
            cb(conn, txn, outcome)
