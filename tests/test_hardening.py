"""Hostile input at the session: each case is an attack seen in hostile testing, its reply,
and proof that nothing of it reached the downstream (docs/HARDENING.md lists them all)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clients import Raw, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
GOOD = (
    "From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n"
    "Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <x@sender.test>\r\n\r\nx\r\n"
)
SMUGGLED = (
    b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nevil\r\n"
)
# A NUL next to the dot of an end-of-data look-alike, in every line-ending combination: a
# downstream that drops NUL bytes would read each one as CRLF.CRLF (or LF.LF) and run what
# follows as a second transaction.
NUL_SEQUENCES = {
    "crlf-nul-dot-crlf": b"\r\n\x00.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\x00\r\n",
    "crlf-nul-dot-nul-crlf": b"\r\n\x00.\x00\r\n",
    "lf-nul-dot-lf": b"\n\x00.\n",
    "cr-nul-dot-cr": b"\r\x00.\r",
    "crlf-nul-dot-lf": b"\r\n\x00.\n",
    "lf-dot-nul-crlf": b"\n.\x00\r\n",
    "nul-crlf-dot-crlf-nul": b"\x00\r\n\x00.\r\n\x00",
}


def gate(sink: Sink, factory: Factory, limits: dict[str, Any] | None = None, **extra: Any) -> Spamgate:
    return factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": limits or {}, **extra})


def start_txn(port: int, source: str = "127.0.0.1") -> Raw:
    c = Raw(port, source)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    return c


def carrier(seq: bytes) -> bytes:
    return b"Subject: carrier\r\n\r\nhello" + seq + SMUGGLED + b".\r\n"


@pytest.mark.parametrize("name", NUL_SEQUENCES)
def test_nul_smuggling_refused_by_default(sink: Sink, spamgate_factory: Factory, name: str) -> None:
    """A message with NUL gets 554 5.6.0 with its ref; nothing is forwarded, nothing smuggled."""
    sink.state.lenient_dot = True
    sink.state.drop_nul = True
    sg = gate(sink, spamgate_factory)
    with start_txn(sg.port) as c:
        c.send(carrier(NUL_SEQUENCES[name]))
        reply = c.reply()
        assert reply.startswith("554 5.6.0 [ref "), reply
        assert c.cmd("NOOP") == "250 2.0.0 Ok"  # the hidden commands were text, never run
    assert sink.messages == []
    tx = sg.wait_log("transaction")[0]
    assert any(s.startswith("NUL_IN_DATA") for s in tx["symbols"])


@pytest.mark.parametrize("name", NUL_SEQUENCES)
def test_nul_stripped_under_normalize(sink: Sink, spamgate_factory: Factory, name: str) -> None:
    """Under bare_newline = normalize the NULs are removed and the message is forwarded as one
    message: a downstream that drops NULs and ends data at LF.LF still sees one transaction."""
    sink.state.lenient_dot = True
    sink.state.drop_nul = True
    sg = gate(sink, spamgate_factory, {"bare_newline": "normalize"})
    with start_txn(sg.port) as c:
        c.send(carrier(NUL_SEQUENCES[name]))
        assert c.reply().startswith("250 ")
        assert c.cmd("QUIT").startswith("221")
    assert len(sink.messages) == 1
    data = sink.messages[0].data
    assert b"\x00" not in data
    assert b"MAIL FROM:<evil@sender.test>" in data  # as text inside the one message
    assert "victim@example.test" not in " ".join(sink.state.commands)


@pytest.mark.parametrize(
    "command",
    [
        b"MAIL FROM:<alice\r@sender.test>",
        b"MAIL FROM:<alice\x00@sender.test>",
        b"MAIL FROM:<alice@sender.test>\x1b[2J",
        b"MAIL FROM:<ali ce@sender.test>",
    ],
)
def test_control_characters_in_mail_refused(sink: Sink, spamgate_factory: Factory, command: bytes) -> None:
    """A CR, NUL, escape or bare space in MAIL FROM is refused (501) even with the sender
    syntax check off: it never reaches the downstream or our headers."""
    sg = gate(sink, spamgate_factory, checks={"sender_syntax": {"enabled": False}})
    c = Raw(sg.port)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    reply = c.cmd(command)
    assert reply.startswith("501 "), reply
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")  # the session goes on
    c.close()
    assert not any("\r" in cmd or "\x00" in cmd or "\x1b" in cmd for cmd in sink.state.commands)


def test_client_copies_of_our_headers_removed(sink: Sink, spamgate_factory: Factory) -> None:
    """X-Spamgate-* and the tag header a client sends are removed; ours are the only ones."""
    sg = gate(sink, spamgate_factory)
    with start_txn(sg.port) as c:
        c.send(
            b"X-Spamgate-Symbols: accept; score=-100; ALL_GOOD\r\n"
            b"X-SPAMGATE-SCORE: -100\r\n X-folded: continuation\r\n"
            b"X-Spam-Flag: NO\r\nSubject: forged verdict\r\n\r\n"
            b"body\r\nX-Spamgate-Score: in the body\r\n.\r\n"
        )
        assert c.reply().startswith("250 ")
    data = sink.messages[0].data
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.lower().count(b"x-spamgate-symbols:") == 1
    assert head.lower().count(b"x-spamgate-score:") == 1
    assert b"ALL_GOOD" not in head
    assert b"-100" not in head
    assert b"X-Spam-Flag" not in head
    assert b"continuation" not in head
    assert b"X-Spamgate-Score: in the body" in body  # the body is untouched
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_rcpt_flood_bounded(sink: Sink, spamgate_factory: Factory) -> None:
    """RCPTs past max_recipients get 452 and are not kept; past the overshoot each one is an
    error, and the error budget closes the session. The log line stays small."""
    sg = gate(sink, spamgate_factory, {"max_recipients": 3, "recipient_overshoot": 2, "max_errors": 4})
    c = Raw(sg.port)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    c.send(b"".join(b"RCPT TO:<user%d@example.test>\r\n" % i for i in range(40)))
    replies = []
    while True:
        r = c.reply()
        if not r:
            break
        replies.append(r)
    codes = [r[:3] for r in replies]
    assert codes[:3] == ["250"] * 3
    assert codes[3:9] == ["452"] * 6  # 2 overshoot + 4 errors
    assert replies[9].startswith("421 4.7.0")
    assert len(replies) == 10
    tx = sg.wait_log("transaction")[0]
    assert len(tx["rcpts"]) == 3
    assert tx["rcpts_over_limit"] == 6
    assert sink.state.commands.count("RSET") <= 1


def test_rcpt_flood_is_linear(sink: Sink, spamgate_factory: Factory) -> None:
    """5,000 RCPTs past the limit cost about as much each as the first hundred (no per-command
    rebuild of the recipient list): the whole flood is answered in well under a few seconds."""
    sg = gate(sink, spamgate_factory, {"max_recipients": 50, "recipient_overshoot": 100000, "max_errors": 10})
    c = Raw(sg.port, timeout=30)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    t0 = time.monotonic()
    n = 5000
    c.send(b"".join(b"RCPT TO:<user%d@example.test>\r\n" % i for i in range(n)))
    for _ in range(n):
        assert c.reply()[:3] in ("250", "452")
    elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed
    assert c.cmd("QUIT").startswith("221")
    tx = sg.wait_log("transaction")[0]
    assert len(tx["rcpts"]) == 50
    assert tx["rcpts_over_limit"] == n - 50


def test_junk_command_limit_frees_the_slot(sink: Sink, spamgate_factory: Factory) -> None:
    """NOOP/RSET/VRFY loops hold a connection slot forever unless bounded: past
    max_junk_commands the client gets 421 and the connection closes."""
    sg = gate(sink, spamgate_factory, {"max_junk_commands": 5})
    c = Raw(sg.port)
    assert c.reply().startswith("220 ")
    replies = [c.cmd(v) for v in ("NOOP", "RSET", "VRFY bob", "HELP", "NOOP", "NOOP")]
    assert all(r[:1] == "2" for r in replies[:5]), replies
    assert replies[5].startswith("421 4.7.0")
    assert c.reply() == ""  # closed
    ev = sg.wait_log("connection")[0]
    assert ev["closed"] == "too_many_junk_commands"


def test_junk_budget_resets_with_mail(sink: Sink, spamgate_factory: Factory) -> None:
    """A client that sends mail between its NOOPs is not junk: MAIL resets the count."""
    sg = gate(sink, spamgate_factory, {"max_junk_commands": 3})
    with smtp(sg.port) as s:
        for i in range(4):
            s.noop()
            s.noop()
            s.sendmail("alice@sender.test", ["bob@example.test"], f"Subject: {i}\r\n\r\nx\r\n")
    assert len(sink.messages) == 4


def test_header_size_limit(sink: Sink, spamgate_factory: Factory) -> None:
    """A header block over max_header_size gets 552 5.3.4; a big body under a small header passes."""
    sg = gate(sink, spamgate_factory, {"max_header_size": "4K"})
    big_head = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 70) for i in range(80))
    with start_txn(sg.port) as c:
        c.send(big_head + b"Subject: big\r\n\r\nbody\r\n.\r\n")
        assert c.reply().startswith("552 5.3.4 [ref ")
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(b"Subject: small head\r\n\r\n" + b"z" * 70 * 200 + b"\r\n.\r\n")
        r = c.reply()
        assert r.startswith(("500 5.5.2", "250")), r  # a 14 KB line: line limit
    assert all(b"X-Filler" not in m.data for m in sink.messages)


def test_inflight_budget_defers_instead_of_growing(sink: Sink, spamgate_factory: Factory) -> None:
    """Past limits.inflight_bytes a message gets 451 4.3.1 (the sender retries); the budget
    is given back, so the next message passes."""
    sg = gate(sink, spamgate_factory, {"inflight_bytes": "256K"})
    line = b"a" * 76 + b"\r\n"
    with start_txn(sg.port) as c:
        c.send(b"Subject: large\r\n\r\n" + line * 8000 + b".\r\n")  # ~620 KB
        assert c.reply().startswith("451 4.3.1 [ref ")
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(b"Subject: small\r\n\r\n" + line * 100 + b".\r\n")
        assert c.reply().startswith("250 ")
    assert len(sink.messages) == 1
    assert b"Subject: small" in sink.messages[0].data


def test_reference_ids_are_80_bits(sink: Sink, spamgate_factory: Factory) -> None:
    """References are 20 hex digits (80 random bits) and a transaction number: unique fleet-wide
    at ISP volume."""
    sg = gate(sink, spamgate_factory)
    with smtp(sg.port) as s:
        s.sendmail("alice@sender.test", ["bob@example.test"], "Subject: x\r\n\r\nx\r\n")
    tx = sg.wait_log("transaction")[0]
    assert re.fullmatch(r"[0-9a-f]{20}\.1", tx["ref"]), tx["ref"]


@pytest.mark.parametrize(
    "rcpt",
    [
        '"victim@elsewhere.example"@example.test',
        '"victim%elsewhere.example"@example.test',
        "victim%elsewhere.example@example.test",
        "elsewhere.example!victim@example.test",
    ],
)
def test_routing_in_local_part_refused(sink: Sink, spamgate_factory: Factory, rcpt: str) -> None:
    """A local domain with a route in its local part would be relayed by a downstream that
    dequotes it (Postfix: resolve_dequoted_address = yes): 553 5.1.3, nothing downstream."""
    sg = gate(sink, spamgate_factory)
    c = Raw(sg.port, "127.0.0.7")
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    reply = c.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.startswith("553 5.1.3 [ref "), reply
    c.close()
    assert not any(cmd.startswith("RCPT") for cmd in sink.state.commands)


def test_routing_in_local_part_allowed_for_relay_clients(sink: Sink, spamgate_factory: Factory) -> None:
    """A client in relay_networks may relay anyway: its quoted local part is passed on."""
    sg = gate(
        sink,
        spamgate_factory,
        relay={"downstream": f"127.0.0.1:{sink.port}", "relay_networks": ["127.0.0.8/32"]},
    )
    with smtp(sg.port, "127.0.0.8") as s:
        s.sendmail("alice@sender.test", ['"a@b.example"@example.test'], GOOD)
    assert sink.messages[0].rcpts == ['"a@b.example"@example.test']


def test_bare_postmaster_accepted(sink: Sink, spamgate_factory: Factory) -> None:
    """RFC 5321 4.5.1: RCPT TO:<postmaster> (no domain) must be accepted; it goes downstream as is."""
    sg = gate(sink, spamgate_factory)
    with smtp(sg.port, "127.0.0.9") as s:
        s.sendmail("alice@sender.test", ["postmaster"], GOOD)
    assert sink.messages[0].rcpts == ["postmaster"]
