"""The Authentication-Results header end to end, and its rendering."""

from __future__ import annotations

from collections.abc import Callable

from proxy.auth.results import method, render, value
from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate
from tests.harness.mail_auth import DkimKey, auth_zone, send_raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


def test_value_quoting() -> None:
    assert value("alice@sender.test") == "alice@sender.test"
    assert value("rsa-sha256") == "rsa-sha256"
    assert value('a b"c(d)') == '"a b\'cd"'
    assert method("dkim", "fail", [("header.d", "x.test")], reason="body hash mismatch") == (
        'dkim=fail reason="body hash mismatch" header.d=x.test'
    )
    assert render("mx.test", []) == "mx.test; none"


def headers(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return list(head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n"))


def test_auth_results_header(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """Our A-R header lists iprev, spf, dkim, dmarc, arc; a forged one in our name is removed,
    another site's is kept."""
    auth_zone(dns_server)
    key = DkimKey("sender.test").publish(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"server": {"authserv_id": "auth.spamgate.test"}})
    forged = "Authentication-Results: auth.spamgate.test; dkim=pass header.d=paypal.test\r\n"
    other = "Authentication-Results: mx.other.test; spf=fail\r\n"
    msg = key.sign(message(frm="alice@sender.test", extra=forged + other))
    assert send_raw(sg.port, msg, mail_from="x@bounce.sender.test").get("ok")
    ar = [h for h in headers(sink.messages[-1].data) if h.lower().startswith("authentication-results:")]
    assert ar[0] == (
        "Authentication-Results: auth.spamgate.test; "
        "iprev=pass (mail.sender.test) policy.iprev=127.0.0.9; "
        "spf=pass smtp.mailfrom=x@bounce.sender.test; "
        "dkim=pass header.d=sender.test header.s=sel header.a=rsa-sha256; "
        "dmarc=pass (p=reject dis=none) header.from=sender.test; "
        "arc=none"
    )
    assert ar[1:] == ["Authentication-Results: mx.other.test; spf=fail"]
    assert "paypal" not in sink.messages[-1].data.decode()


def test_auth_results_null_sender_and_failures(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """Null sender: spf on the HELO identity; an unsigned message from a p=none domain."""
    auth_zone(dns_server)
    dns_server.add("_dmarc.mon.test", "TXT", "v=DMARC1; p=none")
    sg = start_gate(spamgate_factory, sink, dns_server)
    assert send_raw(sg.port, message(frm="alice@mon.test"), mail_from="").get("ok")
    ar = next(h for h in headers(sink.messages[-1].data) if h.startswith("Authentication-Results:"))
    assert "spf=pass smtp.helo=mail.sender.test;" in ar
    assert "dkim=none;" in ar
    assert "dmarc=fail (p=none dis=none) header.from=mon.test;" in ar


def test_auth_results_disabled(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    auth_zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"auth_results": {"enabled": False}}})
    assert send_raw(sg.port, message(frm="alice@sender.test")).get("ok")
    assert b"Authentication-Results" not in sink.messages[-1].data
