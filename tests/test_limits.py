"""Every limit of [limits], through the SMTP port: the exact reply, the session's fate, the sink."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


def relay_with(
    sink: Sink, factory: Callable[..., Spamgate], limits: dict[str, Any], **extra: Any
) -> Spamgate:
    return factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": limits, **extra})


OPEN: list[Raw] = []


@pytest.fixture(autouse=True)
def _close_raw() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def raw(port: int, source: str = "127.0.0.1") -> Raw:
    c = Raw(port, source)
    OPEN.append(c)
    return c


def greet(port: int, source: str = "127.0.0.1") -> Raw:
    c = raw(port, source)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    return c


def test_command_line_length(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {})
    c = greet(sg.port)
    # 512 octets with CRLF is the limit (RFC 5321 4.5.3.1.4): allowed...
    assert c.cmd("NOOP " + "x" * 505).startswith("250 ")
    # ...one more is refused, and the session goes on.
    assert c.cmd("NOOP " + "x" * 506) == "500 5.5.2 Command line too long"
    # Far past the reader buffer (64 KB): still one error, nothing executed from the tail.
    assert c.cmd("NOOP " + "y" * 100_000 + " RSET") == "500 5.5.2 Command line too long"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    c.close()


def test_text_line_length(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        ok = message("line-998", "a" * 998 + "\r\n")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], ok) == {}
        c.mail("alice@sender.test")
        c.rcpt("bob@example.test")
        c.docmd("DATA")
        c.send(message("line-999", "b" * 999 + "\r\n") + b".\r\n")
        code, text = c.getreply()
        assert code == 500
        assert text.startswith(b"5.5.2 [ref ")
        assert text.endswith(b"Line too long (RFC 5321 4.5.3.1.6)")
    assert len(sink.messages) == 1
    assert b"line-998" in sink.messages[0].data


def test_size_advertised_and_declared_size_refused(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_message_size": "10K"})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["size"] == "10240"
        code, text = c.mail("alice@sender.test", ["SIZE=20000"])
        assert code == 552
        assert text.startswith(b"5.3.4 [ref ")
        assert c.mail("alice@sender.test", ["SIZE=9000"])[0] == 250
    assert sink.state.connections == 1  # the second MAIL went downstream, the first did not
    assert sink.messages == []


def test_size_enforced_while_receiving_when_client_lies(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_message_size": "10K"})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        for body_size in (11_000, 3_000_000):  # just over, and far over (discarded while read)
            assert c.mail("alice@sender.test", ["SIZE=100"])[0] == 250
            assert c.rcpt("bob@example.test")[0] == 250
            assert c.docmd("DATA")[0] == 354
            c.send(message("big", ("z" * 70 + "\r\n") * (body_size // 72)) + b".\r\n")
            code, text = c.getreply()
            assert code == 552, text
            assert text.startswith(b"5.3.4 [ref ")
        # The session is still in step: a small message goes through.
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("small")) == {}
    assert [b"small@sender.test" in m.data for m in sink.messages] == [True]
    txs = sg.wait_log("transaction", count=3)
    assert [t["outcome"] for t in txs] == ["rejected", "rejected", "delivered"]
    assert any(s.startswith("SIZE_EXCEEDED") for s in txs[1]["symbols"])


def test_max_recipients(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_recipients": 3, "max_errors": 2})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        for i in range(3):
            assert c.rcpt(f"u{i}@example.test")[0] == 250
        for i in range(3, 6):  # not client errors: max_errors=2 does not close the session
            code, text = c.rcpt(f"u{i}@example.test")
            assert code == 452
            assert text.startswith(b"4.5.3 [ref ")
        assert c.data(message("rcpts"))[0] == 250
    assert sink.messages[0].rcpts == ["u0@example.test", "u1@example.test", "u2@example.test"]


def test_max_errors_then_421_and_close(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_errors": 3})
    c = greet(sg.port)
    assert c.cmd("FOO").startswith("500 5.5.2")
    assert c.cmd("BAR").startswith("500 5.5.2")
    third = c.cmd("BAZ")
    assert third == "500 5.5.2 Syntax error, command unrecognized"
    assert c.reply() == "421 4.7.0 Too many errors, closing connection"
    assert c.closed()
    conn = sg.wait_log("connection")[0]
    assert conn["closed"] == "too_many_errors"
    assert conn["errors"] == 3


def test_junk_flood_closed_and_others_served(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_errors": 10})
    c = raw(sg.port, "127.0.3.1")
    assert c.reply().startswith("220 ")
    c.send(b"".join(b"JUNK%d\r\n" % i for i in range(5000)))
    replies = [c.reply() for _ in range(11)]
    assert replies[:10] == ["500 5.5.2 Syntax error, command unrecognized"] * 10
    assert replies[10] == "421 4.7.0 Too many errors, closing connection"
    assert c.closed()
    with smtp(sg.port, "127.0.3.2") as ok:
        ok.ehlo("client.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after-flood")) == {}
    assert len(sink.messages) == 1


def test_total_connection_limit(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_connections": 2})
    a, b = raw(sg.port, "127.0.4.1"), raw(sg.port, "127.0.4.2")
    assert a.reply().startswith("220 ")
    assert b.reply().startswith("220 ")
    third = raw(sg.port, "127.0.4.3")
    assert third.reply() == "421 4.7.0 Too many connections, try again later"
    assert third.closed()
    a.cmd("QUIT")
    a.close()
    sg.wait_log("connection", count=2)  # the third and the first are gone
    fourth = raw(sg.port, "127.0.4.4")
    assert fourth.reply().startswith("220 ")
    for c in (b, fourth):
        c.close()


def test_per_ip_connection_limit(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_connections_per_ip": 2})
    first = [raw(sg.port, "127.0.5.1") for _ in range(2)]
    for c in first:
        assert c.reply().startswith("220 ")
    extra = raw(sg.port, "127.0.5.1")
    assert extra.reply() == "421 4.7.0 Too many connections from your address, try again later"
    assert extra.closed()
    other = raw(sg.port, "127.0.5.2")  # another address is not affected
    assert other.reply().startswith("220 ")
    conn = sg.wait_log("connection", client_ip="127.0.5.1")[0]
    assert conn["closed"] == "limit_ip"
    for c in [*first, other]:
        c.close()


def test_idle_timeout(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"idle_timeout": "1s"})
    c = greet(sg.port)
    t0 = time.monotonic()
    assert c.reply() == "421 4.4.2 Timeout exceeded, closing connection"
    assert c.closed()
    assert 0.8 < time.monotonic() - t0 < 4
    assert sg.wait_log("connection")[0]["closed"] == "timeout"


def test_data_timeout(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"data_timeout": "1s", "idle_timeout": "30s"})
    c = greet(sg.port)
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: never finished\r\n\r\nbody\r\n")
    t0 = time.monotonic()
    assert c.reply() == "421 4.4.2 Timeout exceeded, closing connection"
    assert c.closed()
    assert time.monotonic() - t0 < 4
    assert sink.messages == []
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "aborted"


def test_http_request_gets_error_and_close(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {})
    c = raw(sg.port, "127.0.6.1")
    assert c.reply().startswith("220 ")
    c.send(b"GET / HTTP/1.1\r\nHost: mx.spamgate.test\r\nUser-Agent: curl\r\n\r\n")
    assert c.reply() == "521 5.5.1 Protocol error: this is an SMTP server"
    assert c.closed()
    assert sg.wait_log("connection", client_ip="127.0.6.1")[0]["closed"] == "non_smtp"
    with smtp(sg.port, "127.0.6.2") as ok:
        ok.ehlo("client.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after-http")) == {}
    assert len(sink.messages) == 1


def test_binary_garbage_errors_then_421(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_errors": 10})
    c = raw(sg.port, "127.0.6.3")
    assert c.reply().startswith("220 ")
    rng = random.Random(7)
    # Ten lines of random bytes (NUL, 8-bit, CR...): exactly the error budget, so all of it is
    # read before the close (unread input would make the close a TCP reset).
    garbage = [bytes(rng.choice([*range(10), *range(11, 256)]) for _ in range(300)) for _ in range(10)]
    c.send(b"".join(g + b"\r\n" for g in garbage))
    replies = []
    while True:
        r = c.reply()
        if not r:
            break
        replies.append(r)
    assert replies, "no reply to garbage"
    assert all(r.startswith(("500 5.5.2 ", "501 5.5.2 ", "501 5.5.4 ")) for r in replies[:-1]), replies
    assert replies[-1] == "421 4.7.0 Too many errors, closing connection"
    assert len(replies) == 11
    assert sg.proc is not None
    assert sg.proc.poll() is None
    with smtp(sg.port, "127.0.6.4") as ok:
        ok.ehlo("client.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after-garbage")) == {}
    assert len(sink.messages) == 1


# -- regressions found by the core branch ---------------------------------------------------


def test_connection_refused_by_limit_is_logged(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_connections_per_ip": 1})
    a = raw(sg.port, "127.0.2.9")
    assert a.reply().startswith("220")
    b = raw(sg.port, "127.0.2.9")
    assert b.reply().startswith("421 4.7.0")
    conn = sg.wait_log("connection", closed="limit_ip")[0]
    assert conn["client_ip"] == "127.0.2.9"


def test_long_line_pipelined_after_data_is_one_error(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """A too-long command line starting in the packet that ended DATA counts once, and the
    command after it is read cleanly (the leftover is not prefixed to it)."""
    sg = relay_with(sink, spamgate_factory, {})
    c = greet(sg.port)
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(message("pl") + b".\r\nNOOP " + b"x" * 40_000)
    assert c.reply().startswith("250 ")
    time.sleep(0.1)
    c.send(b"x" * 40_000 + b"\r\nNOOP\r\n")
    assert c.reply() == "500 5.5.2 Command line too long"
    assert c.reply() == "250 2.0.0 Ok"


def test_long_line_after_connect_reject_does_not_hang(spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"checks": {"static_lists": {"block": ["127.0.13.1/32"]}}})
    c = raw(sg.port, "127.0.13.1")
    assert c.reply().startswith("554 ")
    c.send(b"x" * 100_000 + b"\r\n")
    assert c.reply() == "503 5.5.1 Connection rejected; only QUIT is accepted"
    assert c.cmd("QUIT").startswith("221")
    assert c.closed()


def test_max_transactions(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = relay_with(sink, spamgate_factory, {"max_transactions": 2})
    c = greet(sg.port)
    for i in range(2):
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        assert c.cmd(message(f"t{i}") + b".").startswith("250 ")
    assert c.cmd("MAIL FROM:<alice@sender.test>") == "421 4.7.0 Too many messages in one session, reconnect"
    assert c.closed()
    assert len(sink.messages) == 2


def test_sequence_and_syntax_replies(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """The replies of HARDENING.md's table, exactly."""
    sg = relay_with(sink, spamgate_factory, {"max_errors": 50})
    c = raw(sg.port)
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
    assert c.cmd("EXPN list") == "502 5.5.1 Command not implemented"
    assert c.cmd("VRFY bob").startswith("252 2.5.0")
    assert c.cmd("STARTTLS") == "502 5.5.1 Command not implemented"
    assert c.cmd("QUIT").startswith("221")


def test_abusive_sessions_free_their_slots(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """After each kind of abusive session ends, its connection slot is free again
    (max_connections = 1: a normal client gets in after every one)."""
    sg = relay_with(
        sink, spamgate_factory, {"max_connections": 1, "idle_timeout": "300ms", "data_timeout": "300ms"}
    )

    def normal_client_gets_in() -> None:
        deadline = time.monotonic() + 3
        while True:
            c = raw(sg.port, "127.0.30.1")
            try:
                first = c.reply()
                c.cmd("QUIT")
            except OSError:
                first = "reset"
            c.close()
            if first.startswith("220 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert first.startswith("220 "), first

    # An HTTP request.
    c = raw(sg.port)
    c.reply()
    c.send(b"GET / HTTP/1.1\r\n\r\n")
    assert c.closed()
    normal_client_gets_in()
    # A junk flood.
    c = raw(sg.port)
    c.reply()
    c.send(b"\x00\xff junk\r\n" * 100)
    assert c.closed()
    normal_client_gets_in()
    # Idle until the timeout.
    c = raw(sg.port)
    c.reply()
    assert c.closed()
    normal_client_gets_in()
    # Stalled in DATA until the data timeout.
    c = greet(sg.port)
    c.cmd("MAIL FROM:<alice@sender.test>")
    c.cmd("RCPT TO:<bob@example.test>")
    c.cmd("DATA")
    c.send(b"Subject: stall\r\n")
    assert c.closed()
    normal_client_gets_in()
    # Vanishing mid-DATA.
    c = greet(sg.port)
    c.cmd("MAIL FROM:<alice@sender.test>")
    c.cmd("RCPT TO:<bob@example.test>")
    c.cmd("DATA")
    c.send(b"Subject: gone\r\n")
    c.close()
    normal_client_gets_in()
    assert sink.messages == []
