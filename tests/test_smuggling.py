"""SMTP smuggling: the end of data is only CRLF.CRLF, and nothing ambiguous is forwarded.

Each payload hides a second transaction behind a non-standard end-of-data sequence. By
default the message is refused (554 5.5.2) and the sink gets nothing; with
``limits.bare_newline = "normalize"`` it is forwarded with CRLF line ends, dot-stuffed, and the
sink (even a lenient one that also ends data at "\\n.\\n") receives exactly one message.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

SEQUENCES = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "crlf-dot-cr-crlf": b"\r\n.\r\r\n",
    "bare-lf": b"\nbare LF line\r\n",
    "bare-cr": b"\rbare CR line\r\n",
}
SMUGGLED = (
    b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nevil\r\n"
)


def payload(seq: bytes) -> bytes:
    return b"Subject: carrier\r\nMessage-ID: <carrier@sender.test>\r\n\r\nhello" + seq + SMUGGLED + b".\r\n"


def start_txn(port: int) -> Raw:
    c = Raw(port)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    return c


@pytest.mark.parametrize("name", SEQUENCES)
def test_rejected_by_default(sink: Sink, spamgate_factory: Callable[..., Spamgate], name: str) -> None:
    sink.state.lenient_dot = True
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    with start_txn(sg.port) as c:
        c.send(payload(SEQUENCES[name]))
        reply = c.reply()
        assert reply.startswith("554 5.5.2 [ref ")
        assert reply.endswith("Bare <LF> or <CR> received; lines must end with <CR><LF>")
        # The hidden commands were message text, never executed: the next reply is NOOP's.
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert sink.messages == []
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "rejected"
    assert any(s.startswith("BARE_NEWLINE") for s in tx["symbols"])


@pytest.mark.parametrize("name", SEQUENCES)
def test_normalized_never_smuggles(sink: Sink, spamgate_factory: Callable[..., Spamgate], name: str) -> None:
    sink.state.lenient_dot = True
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": {"bare_newline": "normalize"}}
    )
    with start_txn(sg.port) as c:
        c.send(payload(SEQUENCES[name]))
        assert c.reply().startswith("250 ")
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        assert c.cmd("QUIT").startswith("221")
    assert len(sink.messages) == 1
    msg = sink.messages[0]
    assert msg.rcpts == ["bob@example.test"]
    assert b"MAIL FROM:<evil@sender.test>" in msg.data  # as text inside the one message
    body = msg.data
    assert body.count(b"\n") == body.count(b"\r\n")
    assert body.count(b"\r") == body.count(b"\r\n")
    assert "victim@example.test" not in " ".join(sink.state.commands)


def test_clean_message_unaffected_by_normalize(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": {"bare_newline": "normalize"}}
    )
    with start_txn(sg.port) as c:
        c.send(b"Subject: clean\r\n\r\n..dot line\r\nend\r\n.\r\n")
        assert c.reply().startswith("250 ")
    assert sink.messages[0].data.endswith(b"Subject: clean\r\n\r\n.dot line\r\nend\r\n")
