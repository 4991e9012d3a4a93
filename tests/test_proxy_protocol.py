"""HAProxy PROXY protocol v1/v2: only from trusted networks; the proxied client is the client."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

REAL = "203.0.113.7"


def v1(src: str = REAL, sport: int = 40000) -> bytes:
    return f"PROXY TCP4 {src} 198.51.100.1 {sport} 25\r\n".encode()


def v2(src: str = REAL, sport: int = 40000) -> bytes:
    addrs = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("198.51.100.1").packed
    addrs += struct.pack("!HH", sport, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + struct.pack("!H", len(addrs)) + addrs


@pytest.fixture
def sg(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Spamgate:
    return spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 0},
            "proxy_protocol": {"trusted_networks": ["127.0.0.1/32"], "timeout": "1s"},
        }
    )


def _transaction(c: Raw) -> None:
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: pp\r\n\r\nhi\r\n.").startswith("250 ")
    assert c.cmd("QUIT").startswith("221")


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_trusted_proxy_header(sg: Spamgate, sink: Sink, header: bytes) -> None:
    c = Raw(sg.port, "127.0.0.1")
    c.send(header)
    _transaction(c)
    msg = sink.messages[0]
    assert msg.xclient["ADDR"] == REAL
    assert f"[{REAL}]".encode() in msg.data.split(b"\r\n", 1)[0]
    tx = sg.wait_log("transaction")[0]
    assert tx["client_ip"] == REAL
    assert tx["client_port"] == 40000
    conn = sg.wait_log("connection")[0]
    assert conn["client_ip"] == REAL
    assert conn["proxy_peer"] == "127.0.0.1"


def test_untrusted_peer_header_refused(sg: Spamgate, sink: Sink) -> None:
    c = Raw(sg.port, "127.0.9.9")
    assert c.reply().startswith("220 ")
    assert c.cmd(v1().rstrip(b"\r\n")) == "554 5.7.0 PROXY header not accepted from this address"
    assert c.closed()
    conn = sg.wait_log("connection", closed="proxy_untrusted")[0]
    assert conn["client_ip"] == "127.0.9.9"


def test_untrusted_v2_header_is_not_smtp(sg: Spamgate) -> None:
    c = Raw(sg.port, "127.0.9.9")
    assert c.reply().startswith("220 ")
    c.send(v2())
    # Binary junk from a client: errors, never a session as REAL.
    assert c.reply().startswith("500 ")
    c.close()
    assert all(e["client_ip"] != REAL for e in sg.lines() if "client_ip" in e)


@pytest.mark.parametrize(
    "bad",
    [b"PROXY TCP4 nonsense\r\n", b"EHLO client.sender.test\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x00"],
)
def test_malformed_header_from_trusted_closes(sg: Spamgate, bad: bytes) -> None:
    c = Raw(sg.port, "127.0.0.1")
    c.send(bad)
    assert c.closed()
    assert sg.wait_log("proxy_protocol_invalid")


def test_trusted_peer_without_header_times_out(sg: Spamgate) -> None:
    c = Raw(sg.port, "127.0.0.1")
    assert c.closed(timeout=5)
