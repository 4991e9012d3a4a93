"""HELO DNS checks end to end: resolves, matches the client, dynamic, forged as ours, temperror.

Zone: mail.good.test A 127.0.0.7 (the client's own name); elsewhere.test A 192.0.2.1;
mxonly.test has only an MX; txtonly.test only a TXT; 127-0-0-8.pool.isp.test A 127.0.0.8.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
HELO = {"HELO_NX", "HELO_NOT_CLIENT", "HELO_DYNAMIC", "HELO_FORGED_OURS", "HELO_TEMPERROR"}


def zone(dns: DnsTestServer) -> None:
    dns.add("mail.good.test", "A", "127.0.0.7")
    dns.add("elsewhere.test", "A", "192.0.2.1")
    dns.add("mxonly.test", "MX", "10 mail.good.test.")
    dns.add("txtonly.test", "TXT", "hello")
    dns.add("127-0-0-8.pool.isp.test", "A", "127.0.0.8")


@pytest.mark.parametrize(
    ("label", "ip", "helo", "want"),
    [
        ("matches client", "127.0.0.7", "mail.good.test", {}),
        ("no such name", "127.0.0.7", "nowhere.test", {"HELO_NX": "nowhere.test:nxdomain"}),
        ("no address", "127.0.0.7", "txtonly.test", {"HELO_NX": "txtonly.test:no-address"}),
        ("mx only", "127.0.0.7", "mxonly.test", {"HELO_NOT_CLIENT": "mxonly.test!=127.0.0.7"}),
        ("other address", "127.0.0.7", "elsewhere.test", {"HELO_NOT_CLIENT": "elsewhere.test!=127.0.0.7"}),
        (
            "dynamic",
            "127.0.0.8",
            "127-0-0-8.pool.isp.test",
            {"HELO_DYNAMIC": "127-0-0-8.pool.isp.test~ip-in-name"},
        ),
        ("our hostname", "127.0.0.7", "mx.spamgate.test", {"HELO_FORGED_OURS": "mx.spamgate.test"}),
        ("our domain", "127.0.0.7", "example.test", {"HELO_FORGED_OURS": "example.test"}),
        ("our address", "127.0.0.7", "[127.0.0.1]", {"HELO_FORGED_OURS": "[127.0.0.1]"}),
        ("own client", "127.0.0.1", "mx.spamgate.test", {}),
    ],
)
def test_helo_cases(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    label: str,
    ip: str,
    helo: str,
    want: dict[str, str],
) -> None:
    zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server)
    assert send(sg, ip, helo=helo).get("ok"), label
    got = {k: v[1] for k, v in symbols(sg.wait_log("transaction", client_ip=ip)[-1]).items() if k in HELO}
    assert got == want, label


def test_helo_nx_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A site rule forcing reject on HELO_NX refuses the EHLO; a resolvable name goes through."""
    zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        site_rules='[symbols.HELO_NX]\naction = "reject"\nreply = "550 5.7.1 HELO name not found"\n',
    )
    r = send(sg, "127.0.0.7", helo="nowhere.test")
    assert r.get("error") == 550
    assert send(sg, "127.0.0.7", helo="mail.good.test").get("ok")
    assert len(sink.messages) == 1


@pytest.mark.parametrize(("on_temperror", "want_ok"), [("continue", True), ("tempfail", False)])
def test_helo_timeout(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, want_ok: bool
) -> None:
    """A HELO lookup that times out is HELO_TEMPERROR (not HELO_NX); 'tempfail' defers with 4xx."""
    dns_server.drop("slow.test")
    sg = start_gate(
        spamgate_factory, sink, dns_server, {"checks": {"helo_dns": {"on_temperror": on_temperror}}}
    )
    r = send(sg, "127.0.0.7", helo="mail.slow.test")
    if want_ok:
        assert r.get("ok")
        syms = symbols(sg.wait_log("transaction", client_ip="127.0.0.7")[-1])
        assert syms["HELO_TEMPERROR"][1] == "mail.slow.test"
        assert "HELO_NX" not in syms
    else:
        assert str(r.get("error", "")).startswith("4"), r
