"""Sender domain and RHSBL end to end.

Zone: sender.test MX (from the harness); aonly.test A only; nullmx.test MX 0 . (RFC 7505);
txtonly.test TXT only; spammy.test listed on dbl.test (code 127.0.1.2).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
SENDER = {"SENDER_NULL_MX", "SENDER_DOMAIN_NX", "SENDER_DOMAIN_TEMPERROR", "RHSBL_LISTED", "RHSBL_TEMPERROR"}


def zone(dns: DnsTestServer) -> None:
    dns.add("aonly.test", "A", "192.0.2.10")
    dns.add("nullmx.test", "MX", "0 .")
    dns.add("txtonly.test", "TXT", "hello")  # not SPF: an SPF -all would reject first
    dns.add("spammy.test", "MX", "10 mx.spammy.test.")
    dns.add("spammy.test.dbl.test", "A", "127.0.1.2")


def outcome(sg: Spamgate, mail_from: str) -> tuple[dict[str, object], dict[str, str]]:
    r = send(sg, "127.0.0.7", mail_from=mail_from)
    line = [t for t in sg.wait_log("transaction") if t["mail_from"] == mail_from][-1]
    return r, {k: v[1] for k, v in symbols(line).items() if k in SENDER}


@pytest.mark.parametrize(
    ("mail_from", "want_code", "want"),
    [
        ("alice@sender.test", None, {}),
        ("alice@aonly.test", None, {}),
        ("", None, {}),
        ("carol@example.test", None, {}),  # a local domain: not looked up
        ("alice@nullmx.test", 550, {"SENDER_NULL_MX": "nullmx.test"}),
        ("alice@nowhere.test", 451, {"SENDER_DOMAIN_NX": "nowhere.test:nxdomain"}),
        ("alice@txtonly.test", 451, {"SENDER_DOMAIN_NX": "txtonly.test:no-mail-host"}),
    ],
)
def test_sender_domain(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    mail_from: str,
    want_code: int | None,
    want: dict[str, str],
) -> None:
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server)
    r, got = outcome(sg, mail_from)
    assert got == want
    if want_code is None:
        assert r.get("ok"), r
    else:
        assert r["error"] == want_code
        assert r["reply"].startswith("5.7.27" if want_code == 550 else "4.1.8")


def test_sender_nx_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A site rule makes an unknown sender domain a permanent 550 5.1.8."""
    zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        site_rules='[symbols.SENDER_DOMAIN_NX]\naction = "reject"\n'
        'reply = "550 5.1.8 Sender address rejected: domain not found"\n',
    )
    r, _ = outcome(sg, "alice@nowhere.test")
    assert r["error"] == 550
    assert r["reply"].startswith("5.1.8")


@pytest.mark.parametrize(("on_temperror", "want_code"), [("continue", None), ("tempfail", 451)])
def test_sender_domain_timeout(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, want_code: int | None
) -> None:
    """A sender domain whose DNS times out is a temperror, never 'no such domain'."""
    dns_server.drop("slow.test")
    sg = start_gate(
        spamgate_factory, sink, dns_server, {"checks": {"sender_domain": {"on_temperror": on_temperror}}}
    )
    r, got = outcome(sg, "alice@slow.test")
    assert got == {"SENDER_DOMAIN_TEMPERROR": "MX slow.test"}
    if want_code is None:
        assert r.get("ok")
    else:
        assert r["error"] == want_code


def test_rhsbl(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """A listed sender domain scores the list's weight; an unlisted one nothing; a list that
    times out is RHSBL_TEMPERROR."""
    zone(dns_server)
    dns_server.drop("slowbl.test")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"rhsbl": {"zones": ["dbl.test=127.0.1.[2..99]*4", "slowbl.test*2"]}}},
    )
    r, got = outcome(sg, "alice@spammy.test")
    assert r.get("ok")
    assert got == {"RHSBL_LISTED": "dbl.test:spammy.test:127.0.1.2", "RHSBL_TEMPERROR": "slowbl.test"}
    line = [t for t in sg.transactions() if t["mail_from"] == "alice@spammy.test"][-1]
    assert symbols(line)["RHSBL_LISTED"][0] == 4.0
    r, got = outcome(sg, "alice@sender.test")
    assert got == {"RHSBL_TEMPERROR": "slowbl.test"}


def test_rhsbl_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """With RHSBL_LISTED forced to reject, a listed sender is refused at MAIL; others pass."""
    zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"rhsbl": {"zones": ["dbl.test*4"]}}},
        site_rules='[symbols.RHSBL_LISTED]\naction = "reject"\n',
    )
    r, _ = outcome(sg, "alice@spammy.test")
    assert r["error"] == 550
    r, _ = outcome(sg, "alice@sender.test")
    assert r.get("ok")
    assert len(sink.messages) == 1
