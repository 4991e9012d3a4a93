"""STARTTLS inbound (smtplib, injection, tls.require) and downstream TLS modes."""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("mx.spamgate.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return {"cert_file": str(cert_path), "key_file": str(key_path)}


def _client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def tls_relay(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], cert_files: dict[str, str]
) -> Callable[..., Spamgate]:
    def go(**tls: Any) -> Spamgate:
        return spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "tls": cert_files | tls})

    return go


def test_starttls_with_smtplib(tls_relay: Callable[..., Spamgate], sink: Sink, ca: trustme.CA) -> None:
    sg = tls_relay()
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.has_extn("starttls")
        assert c.starttls(context=_client_ctx(ca))[0] == 220
        c.ehlo("client.sender.test")
        assert not c.has_extn("starttls")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("tls")) == {}
    assert len(sink.messages) == 1
    assert b"with ESMTPS" in sink.messages[0].data or b"ESMTPS" in sink.messages[0].data
    tx = sg.wait_log("transaction")[0]
    assert tx["tls"].startswith("TLSv1.")


@pytest.mark.parametrize("injected", [b"HELP\r\n", b"MAIL FROM:<evil@attacker.test>\r\n"])
def test_starttls_injection_discarded(
    tls_relay: Callable[..., Spamgate], sink: Sink, ca: trustme.CA, injected: bytes
) -> None:
    """Commands sent in plaintext with STARTTLS are discarded, never run after the handshake."""
    sg = tls_relay()
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    c.send(b"STARTTLS\r\n" + injected)
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    assert c.buf == b""  # nothing else answered in plaintext
    c.sock = _client_ctx(ca).wrap_socket(c.sock, server_hostname="mx.spamgate.test")
    # The first reply over TLS is the answer to NOOP, not to the injected command.
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    # And the injected MAIL did not open a transaction: EHLO is needed again after TLS.
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("503 5.5.1")
    c.close()


def test_data_pipelined_after_starttls_discarded(
    tls_relay: Callable[..., Spamgate], sink: Sink, ca: trustme.CA
) -> None:
    sg = tls_relay()
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    c.send(
        b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@attacker.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n"
    )
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    c.sock = _client_ctx(ca).wrap_socket(c.sock, server_hostname="mx.spamgate.test")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("QUIT").startswith("221")
    c.close()
    assert sink.messages == []


def test_tls_require(tls_relay: Callable[..., Spamgate], sink: Sink, ca: trustme.CA) -> None:
    sg = tls_relay(require=True)
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test") == (530, b"5.7.0 Must issue a STARTTLS command first")
        c.starttls(context=_client_ctx(ca))
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250


def test_starttls_not_offered_without_cert(relay: Spamgate) -> None:
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert not c.has_extn("starttls")
        assert c.docmd("STARTTLS")[0] == 502


# -- downstream -----------------------------------------------------------------------------


@pytest.fixture
def tls_sink(ca: trustme.CA) -> Any:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("sink.test").configure_cert(ctx)
    s = Sink(tls_context=ctx).start()
    yield s
    s.close()


def _deliver(port: int) -> tuple[int, bytes]:
    with smtp(port) as c:
        c.ehlo("client.sender.test")
        code, text = c.mail("alice@sender.test")
        if code != 250:
            return code, text
        c.rcpt("bob@example.test")
        try:
            return c.data(message("ds"))
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


@pytest.mark.parametrize(("mode", "tls"), [("off", False), ("opportunistic", True), ("required", True)])
def test_downstream_tls_modes(
    tls_sink: Sink, spamgate_factory: Callable[..., Spamgate], mode: str, tls: bool
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{tls_sink.port}", "tls": mode}})
    assert _deliver(sg.port)[0] == 250
    assert tls_sink.messages[0].tls is tls


def test_downstream_tls_verified(
    tls_sink: Sink, spamgate_factory: Callable[..., Spamgate], ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    relay = {"downstream": f"127.0.0.1:{tls_sink.port}", "tls": "required", "tls_ca_file": str(ca_file)}
    good = spamgate_factory({"relay": relay | {"tls_server_name": "sink.test"}})
    assert _deliver(good.port)[0] == 250
    bad = spamgate_factory({"relay": relay | {"tls_server_name": "other.test"}})
    code, text = _deliver(bad.port)
    assert code == 451
    assert text.startswith(b"4.7.5 [ref ")
    assert len(tls_sink.messages) == 1


def test_downstream_tls_required_without_starttls(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "tls": "required"}})
    code, text = _deliver(sg.port)
    assert code == 451
    assert text.startswith(b"4.7.5 [ref ")
    assert sink.messages == []
    assert sg.wait_log("transaction")[0]["outcome"] == "deferred"


def test_failed_handshake_closes(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], cert_files: dict[str, str]
) -> None:
    """The failed session frees its slot (max_connections = 1: the next client gets in)."""
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "tls": cert_files,
            "limits": {"max_connections": 1},
        }
    )
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert c.closed()
    assert sg.wait_log("connection", closed="tls_failed")
    time.sleep(0.1)
    with smtp(sg.port) as ok:
        ok.ehlo("client.sender.test")
        assert ok.sendmail("alice@sender.test", ["bob@example.test"], message("after")) == {}
