"""SMTP smuggling: the end of data is only CRLF.CRLF; bare CR/LF never end or split a message.

The sink is line-based on LF, like the downstream servers smuggling exploits: if a bare-LF
sequence ever reached it unchanged it would see two messages. It must only ever see one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

SEQUENCES = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"bare\rCR",
    b"bare\nLF",
]
SMUGGLED = (
    b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nPay now.\r\n"
)


def _session(port: int, seq: bytes) -> str:
    c = Raw(port)
    assert c.reply().startswith("220")
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: outer\r\n\r\nhello" + seq + SMUGGLED + b"\r\n.\r\n")
    reply = c.reply()
    # Whatever the client pipelined after the real end is read as commands: still in sync.
    assert c.cmd("NOOP").startswith("250 ")
    assert c.cmd("QUIT").startswith("221")
    c.close()
    return reply


@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s) for s in SEQUENCES])
def test_rejected_by_default(seq: bytes, sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    reply = _session(sg.port, seq)
    assert reply.startswith("554 5.5.2 [ref "), reply
    assert "Bare <LF> or <CR>" in reply
    assert sink.messages == []
    assert not any(c.startswith("MAIL FROM:<evil") for c in sink.state.commands)
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "rejected"
    assert tx["ref"] in reply
    assert any(s.startswith("BARE_NEWLINE") for s in tx["symbols"])


@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s) for s in SEQUENCES])
def test_normalized_never_smuggles(seq: bytes, sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": {"bare_newline": "normalize"}}
    )
    reply = _session(sg.port, seq)
    assert reply.startswith("250 "), reply
    assert len(sink.messages) == 1
    msg = sink.messages[0]
    assert msg.mail_from == "alice@sender.test"
    assert msg.rcpts == ["bob@example.test"]
    # The smuggled transaction is body text of the one message, and every line ends in CRLF.
    assert b"MAIL FROM:<evil@attacker.test>\r\n" in msg.data
    assert msg.data.count(b"\n") == msg.data.count(b"\r\n") == msg.data.count(b"\r")
    assert not any(c.startswith("MAIL FROM:<evil") for c in sink.state.commands)


def test_end_of_data_split_across_packets(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """CRLF.CRLF arriving byte by byte is still found, and nothing before it is taken as the end."""
    import time

    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    c.cmd("MAIL FROM:<alice@sender.test>")
    c.cmd("RCPT TO:<bob@example.test>")
    assert c.cmd("DATA").startswith("354")
    for b in b"Subject: split\r\n\r\nline\r\n..\r\n.x\r\n.\r\n":
        c.send(bytes([b]))
        time.sleep(0.002)
    assert c.reply().startswith("250 ")
    assert sink.messages[0].data.endswith(b"Subject: split\r\n\r\nline\r\n.\r\nx\r\n")  # unstuffed
