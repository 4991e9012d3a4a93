"""Downstream faults: every one ends in a 4xx for the client, nothing is reported delivered."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

FAST = {"connect_timeout": "1s", "command_timeout": "1s", "data_timeout": "1s", "pool_size": 0}


@pytest.fixture
def fast_relay(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Spamgate:
    return spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", **FAST}})


def _send(port: int) -> tuple[int, bytes, str]:
    """MAIL, RCPT, DATA; returns (code, text, stage) of the first non-2xx/3xx reply or of DATA."""
    with smtp(port) as c:
        c.ehlo("client.sender.test")
        code, text = c.mail("alice@sender.test")
        if code >= 400:
            return code, text, "mail"
        code, text = c.rcpt("bob@example.test")
        if code >= 400:
            return code, text, "rcpt"
        try:
            code, text = c.data(message("fault"))
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error, "data"
        return code, text, "data"


@pytest.mark.parametrize(
    ("stage", "reply", "expect_code"),
    [
        ("GREETING", "421 4.3.2 Not now", 451),
        ("EHLO", "421 4.3.2 Not now", 451),
        ("MAIL", "421 4.3.2 Shutting down", 421),
        ("RCPT", "421 4.3.2 Shutting down", 421),
        ("DATA", "421 4.3.2 Shutting down", 421),
        ("DOT", "421 4.3.2 Shutting down", 421),
        ("DATA", "451 4.3.0 Try later", 451),
        ("DOT", "451 4.3.0 Queue write failed", 451),
    ],
)
def test_downstream_fault_at_each_stage_is_4xx(
    fast_relay: Spamgate, sink: Sink, stage: str, reply: str, expect_code: int
) -> None:
    sink.state.fail_at = {stage: reply}
    code, text, _ = _send(fast_relay.port)
    assert 400 <= code < 500, (code, text)
    assert code == expect_code
    assert sink.messages == []
    txs = fast_relay.wait_log("transaction")
    assert all(t["outcome"] != "delivered" for t in txs)
    assert txs[-1]["outcome"] == "deferred"
    if stage not in ("GREETING", "EHLO"):
        assert text.decode().split()[0] == reply.split()[1]  # enhanced code relayed


def test_tempfail_data_relayed_verbatim(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.data_reply = "452 4.3.1 Insufficient system storage"
    code, text, _ = _send(fast_relay.port)
    assert (code, text) == (452, b"4.3.1 Insufficient system storage")
    assert sink.messages == []


def test_drop_mid_data_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.drop_in_data = True
    code, text, stage = _send(fast_relay.port)
    assert (code, stage) == (451, "data")
    assert text.startswith(b"4.4.2 [ref ")
    assert sink.messages == []
    tx = fast_relay.wait_log("transaction")[0]
    assert tx["outcome"] == "deferred"
    assert tx["ref"] in text.decode()


def test_slow_downstream_past_timeouts_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.delay = 1.5
    code, text, stage = _send(fast_relay.port)
    assert code == 451, (code, text, stage)
    assert text.startswith(b"4.4.")
    assert sink.messages == []


def test_downstream_down_is_451(fast_relay: Spamgate, sink: Sink) -> None:
    sink.stop()
    code, text, stage = _send(fast_relay.port)
    assert (code, stage) == (451, "mail")
    assert text.startswith(b"4.4.1 [ref ")
    tx = fast_relay.wait_log("transaction")[0]
    assert tx["outcome"] == "deferred"
    # Back up: the next transaction goes through.
    sink.start()
    code, text, stage = _send(fast_relay.port)
    assert (code, stage) == (250, "data"), text
    assert len(sink.messages) == 1


def test_mixed_recipients_relayed_verbatim(fast_relay: Spamgate, sink: Sink) -> None:
    sink.state.reject_rcpts = {"gone@example.test"}
    sink.state.tempfail_rcpts = {"busy@example.test"}
    with smtp(fast_relay.port) as c:
        c.ehlo("client.sender.test")
        c.mail("alice@sender.test")
        assert c.rcpt("ok@example.test") == (250, b"2.1.5 Ok")
        assert c.rcpt("gone@example.test") == (
            550,
            b"5.1.1 <gone@example.test>: Recipient address rejected: User unknown",
        )
        assert c.rcpt("busy@example.test") == (450, b"4.2.1 Mailbox busy, try later")
        code, _ = c.data(message("mixed"))
        assert code == 250
    assert [m.rcpts for m in sink.messages] == [["ok@example.test"]]
    tx = fast_relay.wait_log("transaction")[0]
    replies = {r["to"]: r["reply"] for r in tx["rcpts"]}
    assert replies["gone@example.test"].startswith("550 5.1.1")
    assert replies["busy@example.test"].startswith("450 4.2.1")


def test_session_survives_downstream_fault(fast_relay: Spamgate, sink: Sink) -> None:
    """After a downstream failure, the next MAIL in the same client session reconnects."""
    sink.state.drop_in_data = True
    with smtp(fast_relay.port) as c:
        c.ehlo("client.sender.test")
        c.mail("alice@sender.test")
        c.rcpt("bob@example.test")
        assert c.data(message("one"))[0] == 451
        sink.state.drop_in_data = False
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.data(message("two"))[0] == 250
    assert len(sink.messages) == 1
    assert b"Message-ID: <two@sender.test>" in sink.messages[0].data


def test_downstream_421_closes_client_session(fast_relay: Spamgate, sink: Sink) -> None:
    """A relayed 421 means closing (RFC 5321 3.8): the client connection ends after it."""
    from tests.harness.clients import Raw

    sink.state.fail_at = {"RCPT": "421 4.3.2 Shutting down"}
    c = Raw(fast_relay.port)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>") == "421 4.3.2 Shutting down"
    assert c.closed()
    c.close()
    tx = fast_relay.wait_log("transaction")[0]
    assert tx["outcome"] == "deferred"


def test_pooled_session_timed_out_by_downstream_is_replaced(relay: Spamgate, sink: Sink) -> None:
    """A pooled downstream session that answers 421 (idle timeout) is reconnected, unseen by the client."""
    with smtp(relay.port, "127.0.11.1") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("p1")) == {}
    sink.state.fail_once = {"MAIL": "421 4.4.2 sink.test Error: timeout exceeded"}
    with smtp(relay.port, "127.0.11.2") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("p2")) == {}
    assert len(sink.messages) == 2
    assert sink.state.connections == 2
    assert sink.messages[1].xclient["ADDR"] == "127.0.11.2"


def test_xclient_421_is_a_lost_session_not_a_refusal(relay: Spamgate, sink: Sink) -> None:
    with smtp(relay.port, "127.0.11.3") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("x1")) == {}
    sink.state.fail_once = {"XCLIENT": "421 4.4.2 sink.test Error: timeout exceeded"}
    with smtp(relay.port, "127.0.11.4") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("x2")) == {}
    # XCLIENT was not given up on: the replacement session carries the client.
    assert sink.messages[1].xclient["ADDR"] == "127.0.11.4"


def test_client_drop_mid_data_forwards_nothing(relay: Spamgate, sink: Sink) -> None:
    from tests.harness.clients import Raw

    c = Raw(relay.port, "127.0.11.5")
    c.reply()
    c.cmd("EHLO client.sender.test")
    c.cmd("MAIL FROM:<alice@sender.test>")
    c.cmd("RCPT TO:<bob@example.test>")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: cut\r\n\r\nhalf a mess")
    c.close()
    tx = relay.wait_log("transaction")[0]
    assert tx["outcome"] == "aborted"
    assert sink.messages == []
    # The downstream session that was mid-transaction is not reused: the next client is clean.
    with smtp(relay.port, "127.0.11.6") as ok:
        ok.ehlo("client.sender.test")
        assert ok.sendmail("alice@sender.test", ["carol@example.test"], message("next")) == {}
    assert [m.rcpts for m in sink.messages] == [["carol@example.test"]]


def test_connect_at_connect(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """relay.connect_at = "connect": the downstream session opens with the client's; a
    downstream that is down then still ends in 451 at MAIL, not at the greeting."""
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}", "connect_at": "connect", "pool_size": 0}}
    )
    from tests.harness.clients import Raw

    c = Raw(sg.port)
    assert c.reply().startswith("220 ")
    assert c.cmd("NOOP").startswith("250")
    assert sink.state.connections == 1
    c.close()
    sink.stop()
    code, text, stage = _send(sg.port)
    assert (code, stage) == (451, "mail")
    assert text.startswith(b"4.4.1 [ref ")
