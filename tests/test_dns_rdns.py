"""Reverse DNS end to end: PTR present and forward-confirmed, missing, unconfirmed, dynamic,
temperror; the confirmed name reaches the Received header and the log line.

Zone: client 127.0.0.7 -> mail.good.test -> 127.0.0.7 (good); 127.0.0.8 -> other.test ->
192.0.2.1 (not confirmed); 127.0.0.9 -> 127-0-0-9.dyn.isp.test -> 127.0.0.9 (dynamic);
127.0.0.5 has no PTR.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.clients import Raw
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
RDNS = {"RDNS_NONE", "RDNS_NOT_FCRDNS", "RDNS_DYNAMIC", "RDNS_TEMPERROR"}


def zone(dns: DnsTestServer) -> None:
    dns.add("7.0.0.127.in-addr.arpa", "PTR", "mail.good.test.")
    dns.add("mail.good.test", "A", "127.0.0.7")
    dns.add("8.0.0.127.in-addr.arpa", "PTR", "other.test.")
    dns.add("other.test", "A", "192.0.2.1")
    dns.add("9.0.0.127.in-addr.arpa", "PTR", "127-0-0-9.dyn.isp.test.")
    dns.add("127-0-0-9.dyn.isp.test", "A", "127.0.0.9")


def tx(sg: Spamgate, ip: str) -> dict[str, object]:
    return sg.wait_log("transaction", client_ip=ip)[-1]


def test_rdns_outcomes(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """Good rDNS: no symbol, name in the Received header; the failing cases each fire theirs."""
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server)
    for ip in ("127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.5"):
        assert send(sg, ip, helo="mail.sender.test").get("ok"), ip
    good = tx(sg, "127.0.0.7")
    assert not RDNS & symbols(good).keys()
    assert good["client_name"] == "mail.good.test"
    first_lines = [m.data.split(b"\r\n", 1)[0] for m in sink.messages]
    assert b"Received: from mail.sender.test (mail.good.test [127.0.0.7])" in first_lines
    assert symbols(tx(sg, "127.0.0.8"))["RDNS_NOT_FCRDNS"][1] == "other.test"
    assert tx(sg, "127.0.0.8")["client_name"] is None
    dyn = symbols(tx(sg, "127.0.0.9"))
    assert dyn["RDNS_DYNAMIC"][1].startswith("127-0-0-9.dyn.isp.test~")
    assert "RDNS_NOT_FCRDNS" not in dyn
    assert symbols(tx(sg, "127.0.0.5"))["RDNS_NONE"] == (2.0, "127.0.0.5")


def test_rdns_none_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A site rule scoring RDNS_NONE above the reject threshold refuses such clients at connect."""
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, site_rules="[symbols.RDNS_NONE]\nscore = 20\n")
    r = send(sg, "127.0.0.5")
    assert r["error"] == 554
    assert send(sg, "127.0.0.7").get("ok")
    assert len(sink.messages) == 1


@pytest.mark.parametrize(("on_temperror", "greeting"), [("continue", "220 "), ("tempfail", "421 ")])
def test_rdns_timeout(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, greeting: str
) -> None:
    """A PTR lookup that times out is RDNS_TEMPERROR, not RDNS_NONE; 'tempfail' defers."""
    dns_server.drop("in-addr.arpa")
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"rdns": {"on_temperror": on_temperror}}})
    raw = Raw(sg.port, "127.0.0.5")
    got = raw.reply()
    raw.close()
    assert got.startswith(greeting), got
    conn = sg.wait_log("connection", client_ip="127.0.0.5")[-1]
    syms = symbols(conn)
    assert "RDNS_TEMPERROR" in syms
    assert "RDNS_NONE" not in syms
    assert ("DNS_TEMPFAIL" in syms) == (on_temperror == "tempfail")


def test_forward_timeout_is_temperror(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """When the PTR name's A lookup times out, the result is a temperror, not 'not confirmed'."""
    dns_server.add("5.0.0.127.in-addr.arpa", "PTR", "slow.test.")
    dns_server.drop("slow.test")
    sg = start_gate(spamgate_factory, sink, dns_server)
    assert send(sg, "127.0.0.5").get("ok")
    syms = symbols(tx(sg, "127.0.0.5"))
    assert syms["RDNS_TEMPERROR"][1] == "A slow.test"
    assert "RDNS_NOT_FCRDNS" not in syms


def test_pass_cache_skips_scoring(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """A client that passed is not scored again within pass_ttl, even if its rDNS went bad;
    its name is still resolved for the Received header. With pass_ttl = 0 it is scored."""
    dns_server.add("7.0.0.127.in-addr.arpa", "PTR", "mail.good.test.", ttl=0)
    dns_server.add("mail.good.test", "A", "127.0.0.7", ttl=0)
    sg = start_gate(spamgate_factory, sink, dns_server, {"dns": {"min_ttl": "0s"}})
    assert send(sg, "127.0.0.7").get("ok")
    assert sg.wait_log("transaction", client_ip="127.0.0.7")[-1]["client_name"] == "mail.good.test"
    dns_server.remove("mail.good.test")  # now the PTR is not forward-confirmed
    assert send(sg, "127.0.0.7").get("ok")
    second = sg.wait_log("transaction", client_ip="127.0.0.7", count=2)[-1]
    assert not RDNS & symbols(second).keys()
    assert second["client_name"] is None
    assert dns_server.count("7.0.0.127.in-addr.arpa") == 2


def test_without_pass_cache_rescored(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """Control case: with pass_ttl = 0 the same change is scored on the next connection."""
    dns_server.add("7.0.0.127.in-addr.arpa", "PTR", "mail.good.test.", ttl=0)
    dns_server.add("mail.good.test", "A", "127.0.0.7", ttl=0)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"dns": {"min_ttl": "0s"}, "checks": {"rdns": {"pass_ttl": "0s"}}},
    )
    assert send(sg, "127.0.0.7").get("ok")
    dns_server.remove("mail.good.test")
    assert send(sg, "127.0.0.7").get("ok")
    second = sg.wait_log("transaction", client_ip="127.0.0.7", count=2)[-1]
    assert symbols(second)["RDNS_NOT_FCRDNS"][1] == "mail.good.test"
