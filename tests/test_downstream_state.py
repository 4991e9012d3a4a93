"""The downstream session is handed to the next transaction (or client) only when it is idle at
the protocol level: no sender, no recipients, no reply outstanding.

The sink is as strict as Postfix (a MAIL inside a transaction gets ``503 5.5.1 Error: nested
MAIL command``) and records every 503 it gave in ``sequence_errors``; each case ends with a
fresh transaction that must be accepted and with no 503 at the sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from proxy.config.loader import from_dict
from proxy.relay.base import ClientIdentity
from proxy.relay.pool import DownstreamPool
from proxy.relay.smtp import State
from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

SLOW = 0.6  # the sink's late reply; well below relay.command_timeout


def _relay(sink: Sink, factory: Callable[..., Spamgate], **relay: object) -> Spamgate:
    return factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "command_timeout": "5s", **relay}})


def _send(port: int, ip: str, subject: str) -> None:
    with smtp(port, ip) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message(subject)) == {}


def _ids(sink: Sink) -> list[str]:
    return [m.data.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode() for m in sink.messages]


def test_strict_sink_refuses_commands_out_of_order(sink: Sink) -> None:
    """The sink answers like Postfix: nested MAIL, RCPT before MAIL, DATA before RCPT and XCLIENT
    in a transaction get 503; RSET, EHLO and a delivered message end the transaction, a message
    refused at the end of data does not (as in Postfix)."""
    raw = Raw(sink.port)
    assert raw.reply().startswith("220 ")
    assert raw.cmd("MAIL FROM:<a@sender.test>") == "503 5.5.1 Error: send HELO/EHLO first"
    assert raw.cmd("EHLO spamgate.test").startswith("250")
    assert raw.cmd("RCPT TO:<b@example.test>") == "503 5.5.1 Error: need MAIL command"
    assert raw.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
    assert raw.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    assert raw.cmd("MAIL FROM:<a@sender.test>") == "503 5.5.1 Error: nested MAIL command"
    assert raw.cmd("XCLIENT ADDR=192.0.2.1") == "503 5.5.1 Error: MAIL transaction in progress"
    assert raw.cmd("RCPT TO:<b@example.test>").startswith("250")
    assert raw.cmd("RSET").startswith("250")
    assert raw.cmd("RCPT TO:<b@example.test>") == "503 5.5.1 Error: need MAIL command"
    assert raw.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    assert raw.cmd("EHLO spamgate.test").startswith("250")
    assert raw.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    assert raw.cmd("RCPT TO:<b@example.test>").startswith("250")
    assert raw.cmd("DATA").startswith("354")
    assert raw.cmd("Subject: x\r\n\r\nhi\r\n.").startswith("250")
    assert raw.cmd("RCPT TO:<b@example.test>") == "503 5.5.1 Error: need MAIL command"
    sink.state.data_reply = "451 4.3.0 Error: try again later"
    assert raw.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    assert raw.cmd("RCPT TO:<b@example.test>").startswith("250")
    assert raw.cmd("DATA").startswith("354")
    assert raw.cmd("Subject: x\r\n\r\nhi\r\n.").startswith("451")
    assert raw.cmd("MAIL FROM:<a@sender.test>") == "503 5.5.1 Error: nested MAIL command"
    assert len(sink.state.sequence_errors) == 8
    raw.close()


def test_refused_data_command_is_followed_by_rset(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """The downstream refuses the DATA command (451, no 354): the client gets that 451, the
    downstream gets RSET, and the next transaction, on the same client session and on the
    next client session taking the pooled downstream session, is accepted (not 503)."""
    sg = _relay(sink, spamgate_factory)
    sink.state.fail_at = {"data": "451 4.3.0 Error: queue file write error"}
    with smtp(sg.port, "127.0.4.1") as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, text = c.data(message("refused"))
        assert (code, text) == (451, b"4.3.0 Error: queue file write error")
        sink.state.fail_at = {}
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("same-session")) == {}
    _send(sg.port, "127.0.4.1", "next-client")
    assert _ids(sink) == ["same-session", "next-client"]
    assert sink.state.sequence_errors == []
    cmds = [c.split(" ")[0].upper() for c in sink.state.commands]
    assert cmds[cmds.index("DATA") + 1] == "RSET"
    assert sink.state.connections == 1


@pytest.mark.parametrize("refusal", ["451 4.3.0 Error: try again later", "554 5.7.1 Error: content rejected"])
def test_refused_message_is_followed_by_rset(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], refusal: str
) -> None:
    """The downstream refuses the message at the end of data and keeps the envelope (Postfix
    does after an smtpd_end_of_data_restrictions refusal): the client gets the refusal
    verbatim, the downstream gets RSET, and the next transaction and the next client are
    accepted."""
    sg = _relay(sink, spamgate_factory)
    sink.state.data_reply = refusal
    with smtp(sg.port, "127.0.4.5") as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, text = c.data(message("refused"))
        assert f"{code} {text.decode()}" == refusal
        sink.state.data_reply = ""
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("same-session")) == {}
    _send(sg.port, "127.0.4.5", "next-client")
    assert _ids(sink) == ["same-session", "next-client"]
    assert sink.state.sequence_errors == []
    assert sink.state.connections == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data", "dot"])
def test_client_drop_while_waiting_for_downstream_reply(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], stage: str
) -> None:
    """The client hangs up while spamgate waits for the downstream's reply to MAIL, RCPT, DATA
    (the 354) or the end of data; the reply comes later. The next client (same address, so no
    XCLIENT in between) gets its mail accepted: the half-done downstream session was closed,
    never pooled."""
    sg = _relay(sink, spamgate_factory)
    _send(sg.port, "127.0.4.2", "warm-up")  # a pooled downstream session exists
    sink.state.delays = {stage: SLOW}
    raw = Raw(sg.port, "127.0.4.2")
    assert raw.reply().startswith("220 ")
    assert raw.cmd("EHLO client.sender.test").startswith("250")
    steps = ["MAIL FROM:<alice@sender.test>", "RCPT TO:<bob@example.test>"]
    upto = {"mail": 1, "rcpt": 2}.get(stage, 2)
    for line in steps[: upto - 1]:
        assert raw.cmd(line).startswith("250")
    if stage in ("mail", "rcpt"):
        raw.send(steps[upto - 1].encode() + b"\r\n")
    else:
        # spamgate answers 354 itself and sends DATA downstream once it has the whole message.
        assert raw.cmd(steps[1]).startswith("250")
        assert raw.cmd("DATA").startswith("354")
        raw.send(message("dropped") + b".\r\n")
    time.sleep(0.1)
    raw.close()
    sg.wait_log("connection", count=2)
    time.sleep(SLOW + 0.2)  # the late reply has reached spamgate's side by now
    sink.state.delays = {}
    _send(sg.port, "127.0.4.2", "after-drop")
    assert sink.state.sequence_errors == []
    # Only a drop after the whole message went downstream can leave it there (never seen 250).
    assert _ids(sink) == ["warm-up", *(["dropped"] if stage == "dot" else []), "after-drop"]
    assert sink.state.connections == 2  # the half-done session was closed, not reused


def test_client_drop_after_rcpt_reply_resets_and_reuses(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """The client leaves after its RCPT was accepted (every reply read): the downstream session
    is reset with RSET in the background and pooled; the next client reuses it."""
    sg = _relay(sink, spamgate_factory)
    raw = Raw(sg.port, "127.0.4.3")
    assert raw.reply().startswith("220 ")
    assert raw.cmd("EHLO client.sender.test").startswith("250")
    assert raw.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert raw.cmd("RCPT TO:<bob@example.test>").startswith("250")
    raw.close()
    sg.wait_log("connection")
    time.sleep(0.2)
    _send(sg.port, "127.0.4.3", "reused")
    assert _ids(sink) == ["reused"]
    assert sink.state.sequence_errors == []
    assert "RSET" in sink.state.commands
    assert sink.state.connections == 1


def test_rset_refused_closes_the_session(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """A downstream that does not answer RSET with 250 is not trusted to be idle: the session
    is closed and the next transaction opens a new one."""
    sg = _relay(sink, spamgate_factory)
    sink.state.fail_at = {"rset": "451 4.3.0 odd"}
    with smtp(sg.port, "127.0.4.4") as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.rset()[0] == 250
        sink.state.fail_at = {}
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("after-rset")) == {}
    assert _ids(sink) == ["after-rset"]
    assert sink.state.sequence_errors == []
    assert sink.state.connections == 2


# -- the state machine itself, in process, against the sink on loopback ------------------------

IDENT = ClientIdentity("192.0.2.7", 25, "", "client.sender.test", "ESMTP")


def _pool(sink: Sink) -> DownstreamPool:
    cfg = from_dict({"relay": {"downstream": f"127.0.0.1:{sink.port}", "command_timeout": "5s"}}).relay
    return DownstreamPool(cfg, "mx.spamgate.test")


async def test_states_follow_the_replies(sink: Sink) -> None:
    """IDLE after open; MAIL once MAIL is written (and while its reply is outstanding: busy);
    IDLE again after a refused MAIL, a delivered message or RSET; only IDLE sessions are pooled."""
    pool = _pool(sink)
    ds = pool.acquire()
    assert ds.state is State.CLOSED
    assert await ds.open() is None
    assert ds.idle
    sink.state.fail_at = {"mail": "451 4.3.0 later"}
    assert (await ds.mail("a@sender.test", {}, IDENT)).code == 451
    assert ds.idle
    sink.state.fail_at = {}
    assert (await ds.mail("a@sender.test", {}, IDENT)).code == 250
    assert ds.state is State.MAIL
    assert not ds.idle
    assert (await ds.rcpt("bob@example.test", {})).code == 250
    assert ds.state is State.MAIL
    assert (await ds.data(b"Subject: s\r\n\r\nhi\r\n")).code == 250
    assert ds.idle
    assert (await ds.mail("a@sender.test", {}, IDENT)).code == 250
    await ds.rset()
    assert ds.idle
    pool.release(ds)
    assert pool.acquire() is ds
    await ds.close()
    assert ds.state is State.CLOSED
    assert sink.state.sequence_errors == []


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data", "dot", "rset"])
async def test_cancelled_while_waiting_for_a_reply_breaks_the_session(sink: Sink, stage: str) -> None:
    """The task is cancelled (the client dropped) while a reply is outstanding: the connection
    is aborted at once (BROKEN, nothing left to reuse), the pool refuses it, and the next
    session from the pool is a new connection that works."""
    pool = _pool(sink)
    ds = pool.acquire()
    if stage != "mail":
        assert (await ds.mail("a@sender.test", {}, IDENT)).code == 250
    if stage in ("data", "dot"):
        assert (await ds.rcpt("bob@example.test", {})).code == 250
    sink.state.delays = {stage: 1.0}
    calls = {
        "mail": lambda: ds.mail("a@sender.test", {}, IDENT),
        "rcpt": lambda: ds.rcpt("bob@example.test", {}),
        "data": lambda: ds.data(b"Subject: s\r\n\r\nhi\r\n"),
        "dot": lambda: ds.data(b"Subject: s\r\n\r\nhi\r\n"),
        "rset": ds.rset,
    }
    task = asyncio.ensure_future(calls[stage]())
    await asyncio.sleep(0.3)
    assert ds.busy
    assert not ds.idle
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ds.state is State.BROKEN
    assert not ds.alive
    pool.release(ds)
    assert pool.idle == []
    sink.state.delays = {}
    fresh = pool.acquire()
    assert fresh is not ds
    assert (await fresh.mail("a@sender.test", {}, IDENT)).code == 250
    await fresh.close()
    await pool.close()
    await asyncio.sleep(0.05)  # the background close of the broken one
    assert sink.state.connections == 2
