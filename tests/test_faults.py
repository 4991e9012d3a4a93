"""Downstream faults: every one ends in a 4xx to the client and nothing is reported delivered.

The sink plays the broken downstream (refused, tempfail, 421 at each stage, dropped mid-DATA,
slower than the relay timeouts, down). Short relay timeouts keep the set fast.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

FAST = {"command_timeout": "1s", "connect_timeout": "1s", "data_timeout": "1s"}
REF = re.compile(r"\[ref ([0-9a-f]+\.\d+)\]")


@pytest.fixture
def fast_relay(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Spamgate:
    return spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 0, **FAST}})


def send(
    c: smtplib.SMTP, subject: str, rcpts: tuple[str, ...] = ("bob@example.test",)
) -> tuple[str, int, str]:
    """One transaction step by step: returns (failed stage or 'ok', code, text)."""
    code, text = c.mail("alice@sender.test")
    if code != 250:
        return "mail", code, text.decode()
    ok = 0
    last = (0, b"")
    for r in rcpts:
        last = c.rcpt(r)
        ok += last[0] == 250
    if not ok:
        c.rset()
        return "rcpt", last[0], last[1].decode()
    code, text = c.docmd("DATA")
    if code != 354:
        return "data", code, text.decode()
    c.send(message(subject).replace(b"\r\n.", b"\r\n..") + b".\r\n")
    code, text = c.getreply()
    return ("ok" if code == 250 else "dot"), code, text.decode()


def assert_deferred_logged(sg: Spamgate, text: str) -> None:
    m = REF.search(text)
    assert m, text
    tx = sg.wait_log("transaction", ref=m.group(1))[0]
    assert tx["outcome"] == "deferred"
    assert tx["downstream_reply"] is None  # the downstream said nothing: the 451 is ours


def test_mixed_recipient_answers_relayed_verbatim(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.reject_rcpts = {"gone@example.test"}
    sink.state.tempfail_rcpts = {"busy@example.test"}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("gone@example.test") == (
            550,
            b"5.1.1 <gone@example.test>: Recipient address rejected: User unknown",
        )
        assert c.rcpt("busy@example.test") == (450, b"4.2.1 Mailbox busy, try later")
        assert c.rcpt("bob@example.test") == (250, b"2.1.5 Ok")
        code, text = c.data(message("mixed"))
        assert code == 250
        assert text == b"2.0.0 Ok: queued as Q1"
    assert [m.rcpts for m in sink.messages] == [["bob@example.test"]]
    tx = fast_relay.wait_log("transaction")[0]
    assert [r["reply"][:3] for r in tx["rcpts"]] == ["550", "450", "250"]


def test_data_tempfail_relayed_and_not_delivered(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.data_reply = "451 4.3.0 Queue file write error"
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        stage, code, text = send(c, "tempfail")
    assert (stage, code, text) == ("dot", 451, "4.3.0 Queue file write error")
    assert sink.messages == []
    tx = fast_relay.wait_log("transaction")[0]
    assert tx["outcome"] == "deferred"


def test_data_permanent_reject_relayed(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.data_reply = "554 5.7.1 Content rejected"
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        assert send(c, "perm") == ("dot", 554, "5.7.1 Content rejected")
    assert sink.messages == []
    assert fast_relay.wait_log("transaction")[0]["outcome"] == "rejected"


def test_drop_mid_data_is_451_and_session_recovers(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.drop_in_data = True
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        stage, code, text = send(c, "dropped")
        assert (stage, code) == ("dot", 451)
        assert text.startswith("4.4.2 ")
        assert_deferred_logged(fast_relay, text)
        sink.state.drop_in_data = False
        assert send(c, "after-drop")[:2] == ("ok", 250)
    assert len(sink.messages) == 1
    assert b"Message-ID: <after-drop@sender.test>" in sink.messages[0].data


def test_slow_data_end_past_timeout_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.delays = {"dot": 2.5}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        stage, code, text = send(c, "slow")
    assert (stage, code) == ("dot", 451)
    assert text.startswith("4.4.2 ")
    assert_deferred_logged(fast_relay, text)
    # The sink may still accept it after our timeout: that is a duplicate risk the client
    # resolves by retrying, never a loss. What matters: the client was not told 250.


def test_slow_rcpt_past_timeout_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.delays = {"rcpt": 2.5}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        code, text = c.rcpt("bob@example.test")
        assert code == 451
        assert text.startswith(b"4.4.2 [ref ")
        code, _ = c.docmd("DATA")
        assert code == 554  # no valid recipient: nothing is relayed
    assert sink.messages == []


def test_slow_greeting_past_connect_timeout_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.delays = {"greeting": 2.5}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        code, text = c.mail("alice@sender.test")
    assert code == 451
    assert text.startswith(b"4.4.1 [ref ")
    assert sink.messages == []


def test_downstream_down_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.stop()
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        stage, code, text = send(c, "down")
        assert (stage, code) == ("mail", 451)
        assert text.startswith("4.4.1 [ref ")
        assert_deferred_logged(fast_relay, text)
        sink.start()  # back up (same port): the next transaction goes through
        assert send(c, "up-again")[:2] == ("ok", 250)
    assert len(sink.messages) == 1


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data", "dot"])
def test_421_at_any_stage_is_4xx_then_recovers(fast_relay: Spamgate, sink: Sink, stage: str) -> None:
    sink.state.fail_at = {stage: "421 4.3.2 sink shutting down"}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.test")
        failed, code, text = send(c, f"f421-{stage}")
        # DATA is answered 354 by spamgate itself: a DATA-command fault surfaces at the end.
        expected = {"greeting": "mail", "ehlo": "mail", "data": "dot"}.get(stage, stage)
        assert failed == expected, (failed, code, text)
        assert code == 451, text
        assert re.match(r"4\.4\.[12] \[ref ", text), text
        assert sink.messages == []
        sink.state.fail_at = {}
        # The session survives; the next MAIL opens a fresh downstream session.
        assert send(c, f"after-{stage}")[:2] == ("ok", 250)
    assert len(sink.messages) == 1
    txs = fast_relay.wait_log("transaction", count=2)
    # After a refused RCPT the client sent RSET: that transaction is "aborted", its RCPT deferred.
    assert txs[0]["outcome"] == ("aborted" if stage == "rcpt" else "deferred")
    if stage == "rcpt":
        assert txs[0]["rcpts"][0]["reply"].startswith("451 4.4.2")
    elif stage in ("data", "dot"):
        assert txs[0]["reply"].startswith("451 4.4.2")
    assert txs[1]["outcome"] == "delivered"
