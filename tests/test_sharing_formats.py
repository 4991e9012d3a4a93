"""Feed formats and the in-memory interval set, without servers."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from proxy.sharing.formats import FeedEntry, FeedError, parse_feed, render_json, render_text, render_zone
from proxy.sharing.intervals import IntervalSet

NOW = 1_800_000_000.0
ENTRIES = [
    FeedEntry("192.0.2.1", "TRAP_HIT", NOW + 60),
    FeedEntry("198.51.100.0/24", "REPUTATION_BAD", NOW + 60),
    FeedEntry("2001:db8::1", "RCPT_DICTIONARY", NOW + 60),
]


def lookup(text: str, ip: str) -> str | None:
    return IntervalSet(parse_feed(text, 1000, now=NOW)).lookup(ipaddress.ip_address(ip))


def test_zone_round_trip_and_codes() -> None:
    zone = render_zone(ENTRIES, NOW, 300)
    assert "192.0.2.1 :127.0.0.2:TRAP_HIT until 2027-01-15T08:01:00Z" in zone
    assert "198.51.100.0/24 :127.0.0.5:REPUTATION_BAD" in zone
    assert "2001:db8" not in zone  # ip4set has no IPv6
    assert "127.0.0.2 :127.0.0.2:" in zone  # the RFC 5782 probe entry
    assert lookup(zone, "192.0.2.1") == "192.0.2.1"
    assert lookup(zone, "198.51.100.77") == "198.51.100.0/24"
    assert lookup(zone, "192.0.2.2") is None


def test_text_and_json_round_trip() -> None:
    for text in (render_text(ENTRIES, NOW), render_json(ENTRIES, NOW)):
        assert lookup(text, "2001:db8::1") == "2001:db8::1"
        assert lookup(text, "2001:db8::2") is None
        assert lookup(text, "198.51.100.1") == "198.51.100.0/24"
    data = json.loads(render_json(ENTRIES, NOW))
    assert data["entries"][0] == {
        "ip": "192.0.2.1",
        "reason": "TRAP_HIT",
        "until": int(NOW + 60),
        "expires": "2027-01-15T08:01:00Z",
    }


def test_json_skips_expired_entries() -> None:
    feed = json.dumps({"entries": [{"ip": "192.0.2.1", "until": NOW - 1}, {"ip": "192.0.2.2"}]})
    assert lookup(feed, "192.0.2.1") is None
    assert lookup(feed, "192.0.2.2") == "192.0.2.2"
    assert lookup(json.dumps(["10.0.0.0/8"]), "10.9.9.9") == "10.0.0.0/8"


def test_rbldnsd_forms() -> None:
    zone = "$TTL 60\n:127.0.0.2:listed\n# c\n; c\n10.1 :127.0.0.3:x\n192.0.2.10-192.0.2.20\n203.0.113.5\n"
    assert lookup(zone, "10.1.200.3") == "10.1.0.0/16"
    assert lookup(zone, "10.2.0.1") is None
    assert lookup(zone, "192.0.2.15") == "192.0.2.10-192.0.2.20"
    assert lookup(zone, "192.0.2.21") is None
    assert lookup(zone, "203.0.113.5") == "203.0.113.5"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("192.0.2.1\nnot-an-ip\n", "line 2"),
        ("!192.0.2.1\n", "exclusions"),
        ("192.0.2.9-192.0.2.1\n", "range end"),
        ("{broken json", "invalid JSON"),
        ('{"entries": [{"reason": "x"}]}', "entry 0"),
        ("\n".join(f"10.0.0.{i}" for i in range(20)), "more than 10"),
    ],
)
def test_broken_feeds_are_refused_whole(text: str, why: str) -> None:
    with pytest.raises(FeedError, match=why):
        parse_feed(text, 10, now=NOW)


def test_interval_set_merges_and_bisects() -> None:
    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "::/127")]
    s = IntervalSet.of(nets)
    assert len(s) == 2  # the two /24 are adjacent: one interval
    assert s.lookup(ipaddress.ip_address("10.0.1.255")) == "10.0.0.0/24"
    assert s.lookup(ipaddress.ip_address("10.0.2.0")) is None
    assert s.lookup(ipaddress.ip_address("::1")) == "::/127"
    assert s.lookup(ipaddress.ip_address("9.255.255.255")) is None
    big = IntervalSet.of(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(0, 60000, 2))
    t0 = time.perf_counter()
    for i in range(10000):
        big.lookup(ipaddress.ip_address(f"10.{(i // 256) % 256}.{i % 256}.1"))
    assert time.perf_counter() - t0 < 0.5


def test_dmarc_rua_and_size_limits() -> None:
    from proxy.sharing.dmarc_record import rua_of
    from proxy.sharing.dmarc_report import size_limit

    raw = "v=DMARC1; p=none; rua=mailto:a@x.test!10m, mailto:b@y.test,https://z.test/r"
    assert rua_of(raw) == ["mailto:a@x.test!10m", "mailto:b@y.test", "https://z.test/r"]
    assert size_limit("mailto:a@x.test!10m") == ("a@x.test", 10 << 20)
    assert size_limit("mailto:a@x.test!500") == ("a@x.test", 500)
    assert size_limit("MAILTO:b@y.test") == ("b@y.test", None)
    assert size_limit("https://z.test/r") == ("", None)
