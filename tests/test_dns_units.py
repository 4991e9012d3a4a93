"""Unit tables for the DNS list syntax, query names, dynamic-name patterns and the pass cache."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from proxy.checks.connect.pass_cache import MemoryPassCache
from proxy.checks.dnsutil import dynamic_match, embeds_address, load_patterns
from proxy.dns.lists import parse_item, reversed_ip


@pytest.mark.parametrize(
    ("item", "zone", "weight", "hits", "misses"),
    [
        ("zen.spamhaus.org", "zen.spamhaus.org", 1.0, ["127.0.0.2", "127.0.0.11"], []),
        ("zen.spamhaus.org.*3", "zen.spamhaus.org", 3.0, ["127.0.0.4"], []),
        (
            "zen.spamhaus.org=127.0.0.[2..11]*3",
            "zen.spamhaus.org",
            3.0,
            ["127.0.0.2", "127.0.0.11"],
            ["127.0.0.12"],
        ),
        ("b.example=127.0.0.2*2.5", "b.example", 2.5, ["127.0.0.2"], ["127.0.0.3"]),
        ("wl.example=127.0.[0..255].[1;3]*-5", "wl.example", -5.0, ["127.0.9.1", "127.0.0.3"], ["127.0.0.2"]),
        ("any.example=127.0.0.*", "any.example", 1.0, ["127.0.0.200"], ["127.0.1.2"]),
    ],
)
def test_parse_item(item: str, zone: str, weight: float, hits: list[str], misses: list[str]) -> None:
    spec = parse_item(item)
    assert (spec.zone, spec.weight) == (zone, weight)
    assert all(spec.matches(c) for c in hits)
    assert not any(spec.matches(c) for c in misses)


@pytest.mark.parametrize(
    "bad", ["", "nodot", "zone.test=127.0.0", "zone.test=127.0.0.[5..2]", "zone.test=1.2.3.999"]
)
def test_parse_item_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_item(bad)


def test_reversed_ip() -> None:
    assert reversed_ip(ipaddress.ip_address("192.0.2.1")) == "1.2.0.192"
    v6 = reversed_ip(ipaddress.ip_address("2001:db8::1"))
    assert v6 == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    assert reversed_ip(ipaddress.ip_address("::ffff:192.0.2.1")) == "1.2.0.192"


@pytest.mark.parametrize(
    ("name", "ip", "dynamic"),
    [
        ("mail.example.com", "192.0.2.1", False),
        ("mx1.google.com", "192.0.2.1", False),
        ("192-0-2-1.example.net", "192.0.2.1", True),
        ("1.2.0.192.rev.example.net", "192.0.2.1", True),
        ("host192000002001.example.net", "192.0.2.1", True),
        ("c0000201.example.net", "192.0.2.1", True),
        ("dyn-17.pool.example.net", "198.51.100.7", True),
        ("adsl-44.isp.example", "198.51.100.7", True),
        ("ppp123.example.net", "198.51.100.7", True),
        ("cpe-1-2.cable.example", "198.51.100.7", True),
        ("smtp.dsl-provider.example", "198.51.100.7", False),
        ("outbound.mailer.example", "198.51.100.7", False),
    ],
)
def test_dynamic_names(name: str, ip: str, dynamic: bool) -> None:
    patterns = load_patterns("")
    assert bool(dynamic_match(name, ipaddress.ip_address(ip), patterns)) is dynamic, name


def test_embeds_address_needs_whole_octets() -> None:
    assert not embeds_address("mail12.example", ipaddress.ip_address("1.2.3.4"))
    assert embeds_address("4-3-2-1.example", ipaddress.ip_address("1.2.3.4"))


def test_bad_pattern_file_names_the_line(tmp_path: object) -> None:
    from pathlib import Path

    f = Path(str(tmp_path)) / "p.txt"
    f.write_text("# comment\nok\n(unclosed\n")
    with pytest.raises(ValueError, match=r"p.txt:3"):
        load_patterns(str(f))


async def test_memory_pass_cache() -> None:
    c = MemoryPassCache(max_entries=2)
    assert not await c.passed("192.0.2.1", "dnsbl")
    await c.remember("192.0.2.1", "dnsbl", 0.2)
    await c.remember("192.0.2.1", "rdns", 10)
    assert await c.passed("192.0.2.1", "dnsbl")
    assert not await c.passed("192.0.2.2", "dnsbl")
    await asyncio.sleep(0.25)
    assert not await c.passed("192.0.2.1", "dnsbl")
    await c.remember("192.0.2.3", "dnsbl", 10)
    await c.remember("192.0.2.4", "dnsbl", 10)
    assert len(c) == 2
    assert not await c.passed("192.0.2.1", "rdns")  # evicted, the oldest


async def test_failing_pass_cache_reads_as_not_passed() -> None:
    """A store-backed cache that raises or hangs never fails the check: 'not passed'."""
    from types import SimpleNamespace

    from proxy.checks.connect import pass_cache

    class Broken:
        async def passed(self, ip: str, test: str) -> bool:
            raise ConnectionError("store down")

        async def remember(self, ip: str, test: str, ttl: float) -> None:
            await asyncio.sleep(30)

    services = SimpleNamespace(pass_cache=Broken())
    assert await pass_cache.passed(services, "192.0.2.1", "dnsbl", 60) is False
    pass_cache.TIMEOUT, old = 0.05, pass_cache.TIMEOUT
    try:
        await pass_cache.remember(services, "192.0.2.1", "dnsbl", 60)  # returns at the timeout
    finally:
        pass_cache.TIMEOUT = old
