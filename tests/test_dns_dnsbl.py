"""DNSBL/DNSWL end to end: listed, allowed, code filters, weights, temperrors, list health, IPv6.

Zone layout of the test DNS server (``bl.test`` a block list, ``wl.test`` an allow list):
  2.0.0.127.<zone>  A 127.0.0.2   the probe address every healthy list lists
  5.0.0.127.bl.test A 127.0.0.2   client 127.0.0.5 is listed
  6.0.0.127.bl.test A 127.0.0.20  client 127.0.0.6 listed with a code outside the filter
  7.0.0.127.wl.test A 127.0.10.2  client 127.0.0.7 is on the allow list
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.clients import Raw
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


def lists_zone(dns: DnsTestServer) -> None:
    for zone in ("bl.test", "wl.test"):
        dns.add(f"2.0.0.127.{zone}", "A", "127.0.0.2")
    dns.add("5.0.0.127.bl.test", "A", "127.0.0.2")
    dns.add("6.0.0.127.bl.test", "A", "127.0.0.20")
    dns.add("7.0.0.127.wl.test", "A", "127.0.10.2")


ZONES = ["bl.test=127.0.0.[2..11]*6", "wl.test=127.0.[0..255].[1..3]*-5"]


def tx(sg: Spamgate, ip: str) -> dict[str, object]:
    return sg.wait_log("transaction", client_ip=ip)[-1]


def test_listed_allowed_and_filtered(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A listed client scores the list's weight, an allowed one its negative weight; a code
    outside the filter and an unlisted client score nothing. No list rejects on its own."""
    lists_zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"dnsbl": {"zones": ZONES}}})
    for ip in ("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.9"):
        assert send(sg, ip).get("ok"), ip
    assert symbols(tx(sg, "127.0.0.5"))["RBL_LISTED"] == (6.0, "bl.test:127.0.0.2")
    assert symbols(tx(sg, "127.0.0.7"))["DNSWL_LISTED"] == (-5.0, "wl.test:127.0.10.2")
    for ip in ("127.0.0.6", "127.0.0.9"):
        syms = symbols(tx(sg, ip))
        assert not {"RBL_LISTED", "DNSWL_LISTED", "RBL_TEMPERROR"} & syms.keys(), (ip, syms)
    assert dns_server.count("5.0.0.127.bl.test") == 1
    assert dns_server.count("5.0.0.127.wl.test") == 1
    assert len(sink.messages) == 4


def test_listed_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """With a site rule forcing reject, a listed client gets 554 at the greeting, others pass."""
    lists_zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"dnsbl": {"zones": ZONES}}},
        site_rules='[symbols.RBL_LISTED]\naction = "reject"\nreply = "554 5.7.1 Listed by a DNS list"\n',
    )
    r = send(sg, "127.0.0.5")
    assert r["error"] == 554
    assert "5.7.1" in r["reply"]
    conn = sg.wait_log("connection", client_ip="127.0.0.5")[-1]
    assert "RBL_LISTED" in symbols(conn)
    assert send(sg, "127.0.0.9").get("ok")
    assert len(sink.messages) == 1


def test_weights_add_up_to_reject(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """Two lists of weight 8 together pass the reject threshold (15) where one does not."""
    for zone in ("one.test", "two.test"):
        dns_server.add(f"2.0.0.127.{zone}", "A", "127.0.0.2")
        dns_server.add(f"5.0.0.127.{zone}", "A", "127.0.0.2")
    dns_server.add("6.0.0.127.one.test", "A", "127.0.0.2")
    sg = start_gate(
        spamgate_factory, sink, dns_server, {"checks": {"dnsbl": {"zones": ["one.test*8", "two.test*8"]}}}
    )
    r = send(sg, "127.0.0.5")
    assert r["error"] == 554
    assert send(sg, "127.0.0.6").get("ok")


@pytest.mark.parametrize(("on_temperror", "want"), [("continue", "ok"), ("tempfail", 421)])
def test_timeout_is_temperror_within_budget(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, want: object
) -> None:
    """A list that never answers is RBL_TEMPERROR (never 'not listed'), within the DNS timeout;
    on_temperror = "tempfail" defers the client with 421."""
    lists_zone(dns_server)
    dns_server.drop("5.0.0.127.bl.test")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"dnsbl": {"zones": ZONES, "on_temperror": on_temperror}}},
    )
    t0 = time.monotonic()
    raw = Raw(sg.port, "127.0.0.5")
    greeting = raw.reply()
    took = time.monotonic() - t0
    raw.close()
    assert took < 1.0, took
    if want == "ok":
        assert greeting.startswith("220 "), greeting
        assert send(sg, "127.0.0.5").get("ok")
        assert symbols(tx(sg, "127.0.0.5"))["RBL_TEMPERROR"][1] == "bl.test"
    else:
        assert greeting.startswith("421 "), greeting
        conn = sg.wait_log("connection", client_ip="127.0.0.5")[-1]
        assert {"RBL_TEMPERROR", "DNS_TEMPFAIL"} <= symbols(conn).keys()
    assert dns_server.count("5.0.0.127.bl.test") >= 1


def test_stage_budget_caps_slow_lists(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """With a DNS timeout longer than the stage budget, the greeting comes at the budget and the
    check is reported as STAGE_TIMEOUT; the mail still goes through."""
    lists_zone(dns_server)
    dns_server.drop("bl.test")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {
            "checks": {"dnsbl": {"zones": ZONES, "health_check": False}},
            "dns": {"timeout": "3s"},
            "policy": {"stage_timeout": "400ms"},
        },
    )
    t0 = time.monotonic()
    raw = Raw(sg.port, "127.0.0.5")
    greeting = raw.reply()
    took = time.monotonic() - t0
    raw.close()
    assert greeting.startswith("220 ")
    assert 0.3 < took < 1.2, took
    conn = sg.wait_log("connection", client_ip="127.0.0.5")[-1]
    assert symbols(conn)["STAGE_TIMEOUT"][1] == "dnsbl"


def test_list_health_disables_broken_lists(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A list answering 127.255.255.254 (public resolver refused) and a list whose probe fails
    (127.0.0.2 not listed) are disabled at start: their listings no longer count."""
    lists_zone(dns_server)
    for name in ("2.0.0.127.refused.test", "1.0.0.127.refused.test", "5.0.0.127.refused.test"):
        dns_server.add(name, "A", "127.255.255.254")
    dns_server.add("5.0.0.127.broken.test", "A", "127.0.0.2")  # no probe record: NXDOMAIN
    zones = ["bl.test*3", "refused.test*3", "broken.test*3"]
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"dnsbl": {"zones": zones}}})
    disabled = sg.wait_log("dns_list_disabled", count=2)
    assert {d["zone"] for d in disabled} == {"refused.test", "broken.test"}
    assert all(d["level"] == "warning" for d in disabled)
    before = dns_server.count("5.0.0.127.refused.test") + dns_server.count("5.0.0.127.broken.test")
    assert send(sg, "127.0.0.5").get("ok")
    syms = symbols(tx(sg, "127.0.0.5"))
    assert syms["RBL_LISTED"] == (3.0, "bl.test:127.0.0.2")
    after = dns_server.count("5.0.0.127.refused.test") + dns_server.count("5.0.0.127.broken.test")
    assert after == before == 0


def test_error_code_at_query_time_disables_list(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """Without probes, a list that answers 127.255.255.255 (over quota) to a real query is
    disabled at once and never counts as a listing."""
    dns_server.add("5.0.0.127.quota.test", "A", "127.255.255.255")
    dns_server.add("6.0.0.127.quota.test", "A", "127.0.0.2")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"dnsbl": {"zones": ["quota.test*6"], "health_check": False}}},
    )
    assert send(sg, "127.0.0.5").get("ok")
    assert "RBL_LISTED" not in symbols(tx(sg, "127.0.0.5"))
    assert sg.wait_log("dns_list_disabled")[0]["zone"] == "quota.test"
    assert send(sg, "127.0.0.6").get("ok")
    assert "RBL_LISTED" not in symbols(tx(sg, "127.0.0.6"))
    assert dns_server.count("6.0.0.127.quota.test") == 0


def test_ipv6_client_uses_nibbles(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """A client on ::1 is looked up as 32 reversed nibbles under the zone."""
    nibbles = ".".join(reversed("0" * 31 + "1"))
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add(f"{nibbles}.bl.test", "A", "127.0.0.4")
    sg = start_gate(
        spamgate_factory, sink, dns_server, {"checks": {"dnsbl": {"zones": ["bl.test*2"]}}}, host="::1"
    )
    assert send(sg, "::1", host="::1").get("ok")
    syms = symbols(sg.wait_log("transaction", client_ip="::1")[-1])
    assert syms["RBL_LISTED"] == (2.0, "bl.test:127.0.0.4")
    assert dns_server.count(f"{nibbles}.bl.test") == 1


def test_pass_cache_skips_lookups(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """A client no list matched is not looked up again within pass_ttl; a listed one is."""
    lists_zone(dns_server)
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": {"dnsbl": {"zones": ["bl.test*3"]}}})
    for _ in range(3):
        assert send(sg, "127.0.0.9").get("ok")
        assert send(sg, "127.0.0.5").get("ok")
    sg.wait_log("transaction", count=6)
    assert dns_server.count("9.0.0.127.bl.test") == 1
    # the listed client is asked each time (the resolver caches the answer: at least once)
    listed = [symbols(t) for t in sg.transactions() if t["client_ip"] == "127.0.0.5"]
    assert all("RBL_LISTED" in s for s in listed)
    assert len(listed) == 3


def test_observe_mode_logs_would_be(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """With the check in observe mode, a listing a rule would reject is logged but relayed."""
    lists_zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": {"dnsbl": {"zones": ZONES, "mode": "observe"}}},
        site_rules='[symbols.RBL_LISTED]\naction = "reject"\n',
    )
    assert send(sg, "127.0.0.5").get("ok")
    line = tx(sg, "127.0.0.5")
    assert line["would_be"] == "reject"
    assert any(s.startswith("~RBL_LISTED(6)") for s in line["symbols"])
    assert len(sink.messages) == 1


def test_bad_zone_item_refused_by_check_config(tmp_path: Path) -> None:
    """A malformed list item is a configuration error naming the key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[checks.dnsbl]\nzones = ["zen.spamhaus.org=127.0.0*3"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode != 0
    assert "checks.dnsbl.zones[0]" in out.stderr + out.stdout
