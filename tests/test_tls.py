"""STARTTLS inbound (injection-proof, tls.require) and TLS to the downstream (off/opportunistic/required)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink
from tests.harness.tls import Pki


def tls_relay(factory: Callable[..., Spamgate], sink: Sink, pki: Pki, **tls: Any) -> Spamgate:
    return factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "tls": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file), **tls},
        }
    )


def read_reply(f: Any) -> str:
    lines = []
    while True:
        line = f.readline().decode().rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "\n".join(lines)


def test_starttls_with_smtplib(sink: Sink, spamgate_factory: Callable[..., Spamgate], pki: Pki) -> None:
    sg = tls_relay(spamgate_factory, sink, pki)
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        code, _ = c.starttls(context=pki.client_context())
        assert code == 220
        c.ehlo("client.test")
        assert not c.has_extn("starttls")  # not offered twice
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("tls")) == {}
    data = sink.messages[0].data
    assert b"with ESMTPS" in data.split(b"\r\n\r\n")[0] or b"TLS" in data.split(b"\r\n\r\n")[0]
    tx = sg.wait_log("transaction")[0]
    assert tx["tls"].startswith("TLSv1.")


@pytest.fixture
def raw_tls(sink: Sink, spamgate_factory: Callable[..., Spamgate], pki: Pki) -> tuple[Spamgate, Pki]:
    return tls_relay(spamgate_factory, sink, pki), pki


@pytest.mark.parametrize(
    "injected",
    [
        b"RSET\r\n",
        b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@example.test>\r\n",
        b"NOOP\r\nNOOP\r\nQUIT\r\n",
    ],
)
def test_starttls_injection_discarded(raw_tls: tuple[Spamgate, Pki], sink: Sink, injected: bytes) -> None:
    sg, pki = raw_tls
    sock = socket.create_connection(("127.0.0.1", sg.port), timeout=10)
    try:
        f = sock.makefile("rb")
        assert read_reply(f).startswith("220 ")
        sock.sendall(b"EHLO client.test\r\n")
        assert "STARTTLS" in read_reply(f)
        sock.sendall(b"STARTTLS\r\n" + injected)  # one packet: plaintext after STARTTLS
        assert read_reply(f) == "220 2.0.0 Ready to start TLS"
        tls = pki.client_context().wrap_socket(sock, server_hostname="mx.spamgate.test")
        tf = tls.makefile("rb")
        tls.sendall(b"EHLO client.test\r\n")
        first = read_reply(tf)
        # The first reply after the handshake is EHLO's: nothing injected was executed.
        assert first.startswith("250-mx.spamgate.test"), first
        tls.sendall(b"MAIL FROM:<alice@sender.test>\r\n")
        assert read_reply(tf).startswith("250 ")  # no "nested MAIL": the injected MAIL never ran
        tls.sendall(b"QUIT\r\n")
        assert read_reply(tf).startswith("221 ")
        tls.close()
    finally:
        sock.close()
    assert "victim@example.test" not in " ".join(sink.state.commands)


def test_tls_require(sink: Sink, spamgate_factory: Callable[..., Spamgate], pki: Pki) -> None:
    sg = tls_relay(spamgate_factory, sink, pki, require=True)
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test") == (530, b"5.7.0 Must issue a STARTTLS command first")
        c.starttls(context=pki.client_context())
        c.ehlo("client.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("required")) == {}
    assert len(sink.messages) == 1


@pytest.fixture
def tls_sink(pki: Pki) -> Iterator[Sink]:
    s = Sink(tls_context=pki.server_context()).start()
    yield s
    s.close()


def _send_one(sg: Spamgate) -> tuple[int, bytes]:
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        code, text = c.mail("alice@sender.test")
        if code != 250:
            return code, text
        assert c.rcpt("bob@example.test")[0] == 250
        return c.data(message("down-tls"))


@pytest.mark.parametrize(("mode", "tls_used"), [("off", False), ("opportunistic", True), ("required", True)])
def test_downstream_tls_modes_with_tls_sink(
    tls_sink: Sink,
    spamgate_factory: Callable[..., Spamgate],
    pki: Pki,
    tmp_path: Any,
    mode: str,
    tls_used: bool,
) -> None:
    relay: dict[str, Any] = {"downstream": f"127.0.0.1:{tls_sink.port}", "tls": mode}
    if mode == "required":  # and verified against our CA
        relay |= {"tls_server_name": "sink.test", "tls_ca_file": str(pki.ca_file(tmp_path))}
    sg = spamgate_factory({"relay": relay})
    assert _send_one(sg)[0] == 250
    assert tls_sink.messages[0].tls is tls_used


def test_downstream_tls_opportunistic_without_starttls(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "tls": "opportunistic"}})
    assert _send_one(sg)[0] == 250
    assert sink.messages[0].tls is False


def test_downstream_tls_required_without_starttls_is_451(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "tls": "required"}})
    code, text = _send_one(sg)
    assert code == 451
    assert text.startswith(b"4.7.5 [ref ")
    assert sink.messages == []


def test_downstream_tls_required_wrong_name_is_451(
    tls_sink: Sink, spamgate_factory: Callable[..., Spamgate], pki: Pki, tmp_path: Any
) -> None:
    relay = {
        "downstream": f"127.0.0.1:{tls_sink.port}",
        "tls": "required",
        "tls_server_name": "other.test",
        "tls_ca_file": str(pki.ca_file(tmp_path)),
    }
    sg = spamgate_factory({"relay": relay})
    code, text = _send_one(sg)
    assert code == 451
    assert text.startswith(b"4.7.5 [ref ")
    assert tls_sink.messages == []
