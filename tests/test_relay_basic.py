"""In-session relay: what the client is told is what the downstream said, byte for byte."""

from __future__ import annotations

from tests.harness.clients import message, smtp, swaks
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


def _body_after_our_headers(data: bytes) -> bytes:
    """Strip the headers spamgate prepends (Received, our A-R, X-Spamgate-*) and nothing else."""
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith((b"Received: from", b"Authentication-Results: mx.spamgate.test;", b"X-Spamgate-")):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        break
    return b"\r\n".join(lines[i:])


def test_delivers_byte_exact_message(relay: Spamgate, sink: Sink) -> None:
    """The sink gets the client's message unchanged apart from the prepended headers."""
    body = "Line one\r\n.leading dot stays\r\n..two dots\r\n\r\nLast line\r\n"
    msg = message("exact", body)
    with smtp(relay.port, "127.0.0.5") as c:
        c.ehlo("client.sender.test")
        refused = c.sendmail("alice@sender.test", ["bob@example.test"], msg)
    assert refused == {}
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert _body_after_our_headers(got.data) == msg
    assert got.mail_from == "alice@sender.test"
    assert got.rcpts == ["bob@example.test"]
    assert got.data.startswith(b"Received: from client.sender.test (unknown [127.0.0.5])")
    tx = relay.wait_log("transaction")[0]
    assert tx["outcome"] == "delivered"
    assert tx["client_ip"] == "127.0.0.5"
    assert tx["downstream_reply"].startswith("250 2.0.0 Ok: queued as Q1")


def test_client_gets_downstream_reply_per_recipient(relay: Spamgate, sink: Sink) -> None:
    """Mixed downstream answers: each RCPT gets the downstream's own code and text."""
    sink.state.reject_rcpts = {"nobody@example.test"}
    sink.state.tempfail_rcpts = {"busy@example.test"}
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, text = c.rcpt("nobody@example.test")
        assert (code, text) == (
            550,
            b"5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
        )
        code, text = c.rcpt("busy@example.test")
        assert (code, text) == (450, b"4.2.1 Mailbox busy, try later")
        code, text = c.data(message())
        assert code == 250
        assert text.startswith(b"2.0.0 Ok: queued as")
    assert sink.messages[0].rcpts == ["bob@example.test"]


def test_swaks_through_relay(relay: Spamgate, sink: Sink) -> None:
    r = swaks(
        relay.port,
        "--to",
        "bob@example.test",
        "--from",
        "alice@sender.test",
        "--helo",
        "mx.sender.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: queued as Q1" in r.stdout
    assert len(sink.messages) == 1


def test_dot_stuffing_round_trip_to_downstream(relay: Spamgate, sink: Sink) -> None:
    """Lines that are or start with dots reach the downstream unchanged (our own stuffing)."""
    body = ".\r\n..\r\n.x\r\nmid . dot\r\n. \r\n"
    msg = message("dots", body)
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], msg) == {}
    assert _body_after_our_headers(sink.messages[0].data) == msg
