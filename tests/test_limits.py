"""Protocol limits through the SMTP port: each limit, its exact reply, nothing forwarded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


@pytest.fixture
def make(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Callable[..., Spamgate]:
    def go(**limits: Any) -> Spamgate:
        return spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": limits})

    return go


def _open(port: int, source: str = "127.0.0.1") -> Raw:
    c = Raw(port, source)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.sender.test").startswith("250")
    return c


def _to_data(c: Raw, size: str = "") -> None:
    assert c.cmd("MAIL FROM:<alice@sender.test>" + size).startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")


def test_command_line_length(make: Callable[..., Spamgate]) -> None:
    sg = make()
    c = _open(sg.port)
    # 512 octets with CRLF is allowed, 513 is not (RFC 5321 4.5.3.1.4).
    assert c.cmd("NOOP " + "x" * (512 - 7)).startswith("250")
    assert c.cmd("NOOP " + "x" * (513 - 7)) == "500 5.5.2 Command line too long"
    # Far beyond the reader buffer: still one error, the session goes on.
    assert c.cmd("NOOP " + "x" * 100_000) == "500 5.5.2 Command line too long"
    assert c.cmd("NOOP").startswith("250")
    c.close()


def test_text_line_length(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make()
    c = _open(sg.port)
    _to_data(c)
    c.send(b"Subject: long\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
    assert c.reply().startswith("500 5.5.2 [ref ")
    # 1000 octets with CRLF is fine.
    _to_data(c)
    c.send(b"Subject: ok\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
    assert c.reply().startswith("250 ")
    c.close()
    assert len(sink.messages) == 1


def test_size_advertised_and_enforced(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make(max_message_size="10K")
    c = Raw(sg.port)
    c.reply()
    assert "250-SIZE 10240" in c.cmd("EHLO client.sender.test")
    # Declared too big: refused at MAIL.
    r = c.cmd("MAIL FROM:<alice@sender.test> SIZE=20000")
    assert r.startswith("552 5.3.4 [ref ")
    # The client lies in SIZE=: enforced while receiving, nothing forwarded.
    _to_data(c, " SIZE=100")
    c.send(b"Subject: big\r\n\r\n" + (b"z" * 70 + b"\r\n") * 400 + b".\r\n")
    r = c.reply()
    assert r.startswith("552 5.3.4 [ref "), r
    # No SIZE at all: same.
    _to_data(c)
    c.send(b"Subject: big\r\n\r\n" + (b"z" * 70 + b"\r\n") * 400 + b".\r\n")
    assert c.reply().startswith("552 5.3.4 ")
    # The session is still usable.
    _to_data(c)
    c.send(b"Subject: small\r\n\r\nhi\r\n.\r\n")
    assert c.reply().startswith("250 ")
    c.close()
    assert len(sink.messages) == 1
    rejected = [t for t in sg.wait_log("transaction", count=4) if t["outcome"] == "rejected"]
    assert len(rejected) == 3
    assert all(any(s.startswith("SIZE_EXCEEDED") for s in t["symbols"]) for t in rejected)


def test_max_recipients(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make(max_recipients=3, max_errors=2)
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        c.mail("alice@sender.test")
        for i in range(3):
            assert c.rcpt(f"u{i}@example.test")[0] == 250
        # Not client errors: more of them than max_errors does not close the session.
        for i in range(3, 6):
            code, text = c.rcpt(f"u{i}@example.test")
            assert code == 452
            assert text.startswith(b"4.5.3 [ref ")
        assert c.data(message("rcpts"))[0] == 250
    assert sink.messages[0].rcpts == ["u0@example.test", "u1@example.test", "u2@example.test"]


def test_max_errors_then_421(make: Callable[..., Spamgate]) -> None:
    sg = make(max_errors=3)
    c = _open(sg.port)
    assert c.cmd("BOGUS").startswith("500 5.5.2")
    assert c.cmd("BOGUS").startswith("500 5.5.2")
    r = c.cmd("BOGUS")
    assert r.startswith("500 5.5.2")
    assert c.reply() == "421 4.7.0 Too many errors, closing connection"
    assert c.closed()
    assert sg.wait_log("connection")[0]["closed"] == "too_many_errors"


def test_junk_flood_in_one_packet(make: Callable[..., Spamgate]) -> None:
    sg = make()
    c = Raw(sg.port)
    c.reply()
    c.send(b"JUNK\r\n" * 5000)
    replies = []
    while True:
        r = c.reply()
        if not r:
            break
        replies.append(r)
    assert replies[:10] == ["500 5.5.2 Syntax error, command unrecognized"] * 10
    assert replies[10] == "421 4.7.0 Too many errors, closing connection"
    assert len(replies) == 11
    # The server still serves the next client.
    with smtp(sg.port) as ok:
        assert ok.ehlo("client.sender.test")[0] == 250


def test_total_connections(make: Callable[..., Spamgate]) -> None:
    sg = make(max_connections=2)
    a, b = Raw(sg.port, "127.0.1.1"), Raw(sg.port, "127.0.1.2")
    assert a.reply().startswith("220")
    assert b.reply().startswith("220")
    c = Raw(sg.port, "127.0.1.3")
    assert c.reply() == "421 4.7.0 Too many connections, try again later"
    assert c.closed()
    a.cmd("QUIT")
    a.close()
    time.sleep(0.1)
    d = Raw(sg.port, "127.0.1.4")
    assert d.reply().startswith("220")
    for x in (b, c, d):
        x.close()


def test_connections_per_ip(make: Callable[..., Spamgate]) -> None:
    sg = make(max_connections_per_ip=2)
    a, b = Raw(sg.port, "127.0.2.1"), Raw(sg.port, "127.0.2.1")
    assert a.reply().startswith("220")
    assert b.reply().startswith("220")
    c = Raw(sg.port, "127.0.2.1")
    assert c.reply() == "421 4.7.0 Too many connections from your address, try again later"
    assert c.closed()
    # Another address is not affected.
    d = Raw(sg.port, "127.0.2.2")
    assert d.reply().startswith("220")
    for x in (a, b, c, d):
        x.close()
    assert sg.wait_log("connection", closed="limit_ip")


def test_idle_timeout(make: Callable[..., Spamgate]) -> None:
    sg = make(idle_timeout="500ms")
    c = _open(sg.port)
    t0 = time.monotonic()
    assert c.reply() == "421 4.4.2 Timeout exceeded, closing connection"
    assert c.closed()
    assert 0.3 < time.monotonic() - t0 < 3


def test_data_timeout(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make(data_timeout="700ms", idle_timeout="30s")
    c = _open(sg.port)
    _to_data(c)
    c.send(b"Subject: slow\r\n\r\npart")
    t0 = time.monotonic()
    assert c.reply() == "421 4.4.2 Timeout exceeded, closing connection"
    assert c.closed()
    assert 0.4 < time.monotonic() - t0 < 3
    assert sink.messages == []
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "aborted"


# -- non-SMTP input ------------------------------------------------------------------------


def test_http_request_gets_error_and_close(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make()
    c = Raw(sg.port, "127.0.10.1")
    assert c.reply().startswith("220 ")
    c.send(b"GET / HTTP/1.1\r\nHost: mx.spamgate.test\r\nUser-Agent: curl\r\n\r\n")
    assert c.reply() == "521 5.5.1 Protocol error: this is an SMTP server"
    assert c.closed()
    assert sg.wait_log("connection", closed="non_smtp")
    # The server keeps serving.
    with smtp(sg.port, "127.0.10.2") as ok:
        ok.ehlo("client.sender.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after-http")) == {}
    assert len(sink.messages) == 1


def test_binary_garbage_then_421(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make(max_errors=5)
    c = Raw(sg.port, "127.0.10.3")
    assert c.reply().startswith("220 ")
    junk = bytes(range(256)) * 40 + b"\r\n\x00\xff\xfe\n" * 20
    c.send(junk)
    replies = []
    while r := c.reply():
        replies.append(r)
    assert replies[-1] == "421 4.7.0 Too many errors, closing connection"
    assert all(r.startswith("500 5.5.2") for r in replies[:-1])
    assert len(replies) == 6
    with smtp(sg.port, "127.0.10.4") as ok:
        ok.ehlo("client.sender.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after-junk")) == {}
    assert len(sink.messages) == 1


def test_max_transactions(make: Callable[..., Spamgate], sink: Sink) -> None:
    sg = make(max_transactions=2)
    c = _open(sg.port)
    for _ in range(2):
        _to_data(c)
        assert c.cmd(b"Subject: t\r\n\r\nhi\r\n.").startswith("250 ")
    assert c.cmd("MAIL FROM:<alice@sender.test>") == "421 4.7.0 Too many messages in one session, reconnect"
    assert c.closed()
    assert len(sink.messages) == 2


def test_sequence_and_syntax_replies(make: Callable[..., Spamgate]) -> None:
    sg = make(max_errors=50)
    c = Raw(sg.port)
    c.reply()
    assert c.cmd("MAIL FROM:<a@sender.test>") == "503 5.5.1 Send HELO/EHLO first"
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>") == "503 5.5.1 Need MAIL command first"
    assert c.cmd("DATA") == "503 5.5.1 Need MAIL command first"
    assert c.cmd("MAIL FROM:<a@sender.test") == "501 5.1.7 Bad sender address syntax"
    assert c.cmd("MAIL FROM:<a@sender.test> FOO=1") == "555 5.5.4 Unsupported MAIL/RCPT parameter"
    assert c.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    assert c.cmd("MAIL FROM:<a@sender.test>") == "503 5.5.1 Sender already specified"
    assert c.cmd("DATA") == "503 5.5.1 Need RCPT command first"
    assert c.cmd("RCPT TO:<bob@example.test") == "501 5.1.3 Bad recipient address syntax"
    assert c.cmd("AUTH PLAIN AAAA") == "502 5.5.1 AUTH not offered"
    assert c.cmd("VRFY bob").startswith("252 2.5.0")
    assert c.cmd("STARTTLS") == "502 5.5.1 Command not implemented"
    assert c.cmd("QUIT").startswith("221")


def test_long_line_pipelined_after_data(make: Callable[..., Spamgate]) -> None:
    """A too-long command line that starts in the packet ending the message is one error."""
    sg = make()
    c = _open(sg.port)
    _to_data(c)
    c.send(b"Subject: t\r\n\r\nhi\r\n.\r\nNOOP " + b"x" * 40_000)
    assert c.reply().startswith("250 ")
    time.sleep(0.1)
    c.send(b"x" * 40_000 + b"\r\nNOOP\r\n")
    assert c.reply() == "500 5.5.2 Command line too long"
    assert c.reply() == "250 2.0.0 Ok"


def test_long_line_after_connect_reject(spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"checks": {"static_lists": {"block": ["127.0.13.1/32"]}}})
    c = Raw(sg.port, "127.0.13.1")
    assert c.reply().startswith("554 ")
    c.send(b"x" * 100_000 + b"\r\n")
    assert c.reply() == "503 5.5.1 Connection rejected; only QUIT is accepted"
    assert c.cmd("QUIT").startswith("221")
    assert c.closed()
