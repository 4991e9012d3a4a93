"""HAProxy PROXY protocol v1/v2: honoured only from trusted networks, refused otherwise.

The proxied address is the client for everything: the log, XCLIENT ADDR to the downstream
and the Received header.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, dst: str = "192.0.2.1", sport: int = 40000, dport: int = 25) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str = "192.0.2.1", sport: int = 40000, dport: int = 25) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def proxied(sink: Sink, factory: Callable[..., Spamgate], trusted: list[str]) -> Spamgate:
    return factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "proxy_protocol": {"trusted_networks": trusted, "timeout": "1s"},
        }
    )


def deliver(c: Raw, subject: str) -> None:
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.example").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(f"Subject: {subject}\r\n\r\nhi\r\n.").startswith("250 ")
    assert c.cmd("QUIT").startswith("221")


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (v1("192.0.2.10"), "192.0.2.10"),
        (v2("198.51.100.7"), "198.51.100.7"),
        (v1("2001:db8::25", "2001:db8::1"), "2001:db8::25"),
        (v2("2001:db8::26", "2001:db8::1"), "2001:db8::26"),
    ],
    ids=["v1-ipv4", "v2-ipv4", "v1-ipv6", "v2-ipv6"],
)
def test_trusted_proxy_address_is_the_client(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], header: bytes, client: str
) -> None:
    sg = proxied(sink, spamgate_factory, ["127.0.0.0/8"])
    with Raw(sg.port, "127.0.7.1") as c:
        c.send(header)
        deliver(c, "proxied")
    msg = sink.messages[0]
    assert msg.xclient["ADDR"] == (f"IPV6:{client}" if ":" in client else client)
    received = msg.data.split(b"\r\n")[0].decode()
    assert f"[{'IPv6:' if ':' in client else ''}{client}]" in received, received
    tx = sg.wait_log("transaction")[0]
    assert tx["client_ip"] == client
    conn = sg.wait_log("connection")[0]
    assert conn["client_ip"] == client
    assert conn["proxy_peer"] == "127.0.7.1"


def test_untrusted_peer_proxy_header_refused(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = proxied(sink, spamgate_factory, ["10.0.0.0/8"])
    with Raw(sg.port, "127.0.7.2") as c:
        assert c.reply().startswith("220 ")  # not a trusted proxy: a plain SMTP client
        c.send(v1("192.0.2.66"))
        assert c.reply() == "554 5.7.0 PROXY header not accepted from this address"
        assert c.closed()
    conn = sg.wait_log("connection")[0]
    assert conn["client_ip"] == "127.0.7.2"
    assert conn["closed"] == "proxy_untrusted"
    assert sink.messages == []


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 not-an-ip 192.0.2.1 1 25\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.1 99999 25\r\n",
        V2_SIG + b"\x21\x11\x00\x04abcd",
        b"EHLO client.example\r\n",  # no header at all from a trusted proxy
    ],
    ids=["v1-bad-ip", "v1-bad-port", "v2-short", "missing"],
)
def test_malformed_header_from_trusted_is_closed(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], header: bytes
) -> None:
    sg = proxied(sink, spamgate_factory, ["127.0.0.0/8"])
    with Raw(sg.port, "127.0.7.3") as c:
        c.send(header)
        assert c.closed()
    assert sg.wait_log("proxy_protocol_invalid")[0]["peer"] == "127.0.7.3"
    with Raw(sg.port, "127.0.7.4") as ok:  # the listener keeps serving
        ok.send(v1("192.0.2.11"))
        deliver(ok, "after-bad-header")
    assert len(sink.messages) == 1


def test_trusted_proxy_silent_times_out(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = proxied(sink, spamgate_factory, ["127.0.0.0/8"])
    s: Any = socket.create_connection(("127.0.0.1", sg.port), timeout=5)
    try:
        s.settimeout(4)
        data = b""
        while chunk := s.recv(100):
            data += chunk
        # Closed after proxy_protocol.timeout, never greeted as if it were a client.
        assert data in (b"", b"421 4.4.2 Timeout exceeded, closing connection\r\n")
    finally:
        s.close()
