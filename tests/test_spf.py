"""SPF at MAIL end to end: spamgate resolving through the test DNS server, a real SMTP client.

Zone: sender.test ``v=spf1 ip4:127.0.0.0/24 -all`` (the harness's client is 127.0.0.x);
soft.test ``~all``; neutral.test ``?all``; broken.test two records (permerror); slow.test's
record is dropped (timeout); mail.sender.test (HELO) ``v=spf1 a ip4:127.0.0.0/24 -all``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
# SENDER_DOMAIN_* are the dns helper's; not asserted here.
SPF = {"SPF_PASS", "SPF_FAIL", "SPF_SOFTFAIL", "SPF_NEUTRAL", "SPF_NONE", "SPF_TEMPERROR", "SPF_PERMERROR"}


def zone(dns: DnsTestServer) -> None:
    dns.add("sender.test", "MX", "10 mail.sender.test.")
    dns.add("mail.sender.test", "A", "127.0.0.1")
    dns.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.0/24 -all")
    dns.add("mail.sender.test", "TXT", "v=spf1 a ip4:127.0.0.0/24 -all")
    for name, rec in (("soft.test", "v=spf1 ip4:192.0.2.1 ~all"), ("neutral.test", "v=spf1 ?all")):
        dns.add(name, "MX", "10 mail.sender.test.")
        dns.add(name, "TXT", rec)
    dns.add("broken.test", "MX", "10 mail.sender.test.")
    dns.add("broken.test", "TXT", "v=spf1 -all")
    dns.add("broken.test", "TXT", "v=spf1 +all")
    dns.add("nospf.test", "MX", "10 mail.sender.test.")
    dns.add("slow.test", "MX", "10 mail.sender.test.")


def spf_symbols(sg: Spamgate, mail_from: str) -> dict[str, str]:
    line = [t for t in sg.wait_log("transaction") if t["mail_from"] == mail_from][-1]
    return {k: v[1] for k, v in symbols(line).items() if k in SPF}


@pytest.mark.parametrize(
    ("mail_from", "source", "want", "code"),
    [
        ("alice@sender.test", "127.0.0.9", {"SPF_PASS": "sender.test"}, None),
        ("alice@soft.test", "127.0.0.9", {"SPF_SOFTFAIL": "soft.test"}, None),
        ("alice@neutral.test", "127.0.0.9", {"SPF_NEUTRAL": "neutral.test"}, None),
        ("alice@nospf.test", "127.0.0.9", {"SPF_NONE": "nospf.test"}, None),
        ("alice@broken.test", "127.0.0.9", {"SPF_PERMERROR": "broken.test"}, None),
        ("", "127.0.0.9", {"SPF_PASS": "helo:mail.sender.test"}, None),
        ("alice@sender.test", "127.0.1.9", {"SPF_FAIL": "sender.test"}, 550),
        ("", "127.0.1.9", {"SPF_FAIL": "helo:mail.sender.test"}, 550),
    ],
)
def test_spf_results(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    mail_from: str,
    source: str,
    want: dict[str, str],
    code: int | None,
) -> None:
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server)
    r = send(sg, source, mail_from=mail_from)
    assert spf_symbols(sg, mail_from) == want
    if code is None:
        assert r.get("ok"), r
    else:
        assert r["error"] == 550, r
        assert r["reply"].startswith("5.7.23"), r
        assert not sink.messages


def test_spf_fail_only_scored_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A site rule that drops the forced action lets an SPF failure through with its score."""
    zone(dns_server)
    sg = start_gate(
        spamgate_factory, sink, dns_server, site_rules='[symbols.SPF_FAIL]\naction = ""\nscore = 4\n'
    )
    r = send(sg, "127.0.1.9", mail_from="alice@sender.test")
    assert r.get("ok"), r
    assert spf_symbols(sg, "alice@sender.test") == {"SPF_FAIL": "sender.test"}
    assert b"SPF_FAIL(4){sender.test}" in sink.messages[-1].data


def test_spf_softfail_rejected_under_enforcing_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        site_rules='[symbols.SPF_SOFTFAIL]\naction = "reject"\nreply = "550 5.7.23 SPF softfail"\n',
    )
    r = send(sg, "127.0.0.9", mail_from="alice@soft.test")
    assert r["error"] == 550
    assert "SPF softfail" in r["reply"]


@pytest.mark.parametrize(("on_temperror", "code"), [("continue", None), ("tempfail", 451)])
def test_spf_dns_timeout(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, code: int | None
) -> None:
    """A dropped SPF lookup is SPF_TEMPERROR within the stage budget; continue or 451."""
    zone(dns_server)
    dns_server.add("slow-spf.test", "MX", "10 mail.sender.test.")
    dns_server.drop("slow-spf.test")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"policy": {"stage_timeout": "3s"}, "checks": {"spf": {"on_temperror": on_temperror}}},
    )
    t0 = time.monotonic()
    r = send(sg, "127.0.0.9", mail_from="alice@slow-spf.test")
    assert time.monotonic() - t0 < 3.5
    line = [t for t in sg.wait_log("transaction") if t["mail_from"] == "alice@slow-spf.test"][-1]
    got = symbols(line)
    assert "SPF_TEMPERROR" in got, got
    if code is None:
        assert r.get("ok"), r
    else:
        assert r["error"] == 451, r


def test_spf_and_dmarc_skip_relay_networks(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """Our own submission hosts are not checked: an SPF -all does not reject them."""
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"relay": {"relay_networks": ["127.0.1.0/24"]}})
    r = send(sg, "127.0.1.9", mail_from="alice@sender.test")
    assert r.get("ok"), r
    line = sg.wait_log("transaction")[-1]
    assert not [k for k in symbols(line) if k.startswith(("SPF_", "DMARC_"))]


def test_spf_check_helo(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """check_helo: the HELO name's SPF is evaluated too; its failure scores SPF_HELO_FAIL."""
    zone(dns_server)
    dns_server.add("wide.test", "MX", "10 mail.sender.test.")
    dns_server.add("wide.test", "TXT", "v=spf1 ip4:127.0.0.0/16 -all")
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"spf": {"check_helo": True}}})
    r = send(sg, "127.0.1.9", mail_from="alice@wide.test")  # MAIL FROM passes, HELO does not
    assert r.get("ok"), r
    line = sg.wait_log("transaction")[-1]
    got = {k: v[1] for k, v in symbols(line).items() if k.startswith("SPF_")}
    assert got == {"SPF_PASS": "wide.test", "SPF_HELO_FAIL": "mail.sender.test"}


def test_spf_fail_observed(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """[checks.spf] mode = "observe": an SPF failure is logged as a would-be reject, mail goes on."""
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"spf": {"mode": "observe"}}})
    r = send(sg, "127.0.1.9", mail_from="alice@sender.test")
    assert r.get("ok"), r
    line = sg.wait_log("transaction")[-1]
    assert line["would_be"] == "reject"
    assert "~SPF_FAIL(6){sender.test}" in line["symbols"]


def test_spf_ipv6_client(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """An IPv6 client is matched by ip6: mechanisms."""
    zone(dns_server)
    dns_server.add("six.test", "MX", "10 mail.sender.test.")
    dns_server.add("six.test", "TXT", "v=spf1 ip6:::1/128 -all")
    dns_server.add("four.test", "MX", "10 mail.sender.test.")
    dns_server.add("four.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    sg = start_gate(spamgate_factory, sink, dns_server, host="::1")
    assert send(sg, "::1", mail_from="alice@six.test", host="::1").get("ok")
    assert spf_symbols(sg, "alice@six.test") == {"SPF_PASS": "six.test"}
    r = send(sg, "::1", mail_from="alice@four.test", host="::1")
    assert r["error"] == 550
    assert spf_symbols(sg, "alice@four.test") == {"SPF_FAIL": "four.test"}
