"""The resolver against the real test DNS server: formats, statuses, cache, sharing, threads."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.config.fields import ConfigError
from proxy.dns.config import DnsConfig
from proxy.dns.resolver import Resolver, parse_nameserver
from tests.harness.dns_server import DnsTestServer


def make(srv: DnsTestServer, **kw: object) -> Resolver:
    cfg = {"nameservers": [srv.address], "timeout": 0.3, "retries": 0, "min_ttl": 0.0} | kw
    return Resolver(DnsConfig(**cfg))  # type: ignore[arg-type]


async def test_record_formats(dns_server: DnsTestServer) -> None:
    """Every record type comes back normalised: names without dot, TXT strings joined, MX tuples."""
    dns_server.load_zone_dict(
        {
            "a.test": {
                "A": ["192.0.2.1", "192.0.2.2"],
                "AAAA": "2001:db8::1",
                "MX": ["10 mx1.a.test.", "20 mx2.a.test."],
                "TXT": [["v=spf1 ", "-all"], "other"],
                "NS": "ns.a.test.",
            },
            "1.2.0.192.in-addr.arpa": {"PTR": "host.a.test."},
            "alias.test": {"CNAME": "a.test."},
        }
    )
    r = make(dns_server)
    try:
        a = await r.lookup("A.Test.", "A")
        assert a.ok
        assert sorted(a.records) == ["192.0.2.1", "192.0.2.2"]
        assert (await r.lookup("a.test", "AAAA")).records == ("2001:db8::1",)
        assert sorted((await r.lookup("a.test", "MX")).records) == [(10, "mx1.a.test"), (20, "mx2.a.test")]
        assert sorted((await r.lookup("a.test", "TXT")).records) == ["other", "v=spf1 -all"]
        assert (await r.lookup("a.test", "NS")).records == ("ns.a.test",)
        assert (await r.lookup("1.2.0.192.in-addr.arpa", "PTR")).records == ("host.a.test",)
        assert (await r.lookup("alias.test", "CNAME")).records == ("a.test",)
        via = await r.lookup("alias.test", "A")  # the CNAME itself is dropped from A answers
        assert sorted(via.records) == ["192.0.2.1", "192.0.2.2"]
    finally:
        await r.close()


async def test_statuses(dns_server: DnsTestServer) -> None:
    """NXDOMAIN, NODATA, SERVFAIL and silence map to their statuses; only failures are 'failed'."""
    dns_server.add("a.test", "A", "192.0.2.1")
    dns_server.servfail("sf.test")
    dns_server.drop("drop.test")
    r = make(dns_server)
    try:
        nx = await r.lookup("nope.test", "A")
        nodata = await r.lookup("a.test", "MX")
        sf = await r.lookup("x.sf.test", "A")
        t0 = time.monotonic()
        to = await r.lookup("x.drop.test", "A")
        took = time.monotonic() - t0
    finally:
        await r.close()
    assert (nx.status, nx.failed, nx.ok) == ("nxdomain", False, False)
    assert (nodata.status, nodata.failed) == ("nodata", False)
    assert (sf.status, sf.failed) == ("servfail", True)
    assert (to.status, to.failed) == ("timeout", True)
    assert took < 1.0
    assert r.stats["timeouts"] == 1
    assert r.stats["errors"] == 1


async def test_malformed_and_idn_names(dns_server: DnsTestServer) -> None:
    """A name that cannot exist is nxdomain (not a temperror); IDN names go out as IDNA."""
    dns_server.add("xn--bcher-kva.test", "A", "192.0.2.5")
    r = make(dns_server)
    try:
        assert (await r.lookup("bad..name.test", "A")).status == "nxdomain"
        assert (await r.lookup("x" * 64 + ".test", "A")).status == "nxdomain"
        assert (await r.lookup("Bücher.test", "A")).records == ("192.0.2.5",)
    finally:
        await r.close()


async def test_cache_honours_ttl(dns_server: DnsTestServer) -> None:
    """A cached answer is served until its TTL ends, then asked again."""
    dns_server.add("ttl.test", "TXT", "one", ttl=1)
    r = make(dns_server)
    try:
        for _ in range(3):
            assert (await r.lookup("ttl.test", "TXT")).records == ("one",)
        assert dns_server.count("ttl.test") == 1
        assert r.stats["cache_hits"] == 2
        dns_server.remove("ttl.test")
        dns_server.add("ttl.test", "TXT", "two", ttl=1)
        await asyncio.sleep(1.2)
        assert (await r.lookup("ttl.test", "TXT")).records == ("two",)
        assert dns_server.count("ttl.test") == 2
    finally:
        await r.close()


async def test_min_ttl_clamp(dns_server: DnsTestServer) -> None:
    """min_ttl keeps a short-lived answer longer than its TTL."""
    dns_server.add("short.test", "A", "192.0.2.9", ttl=0)
    r = make(dns_server, min_ttl=30.0)
    try:
        await r.lookup("short.test", "A")
        await r.lookup("short.test", "A")
    finally:
        await r.close()
    assert dns_server.count("short.test") == 1


async def test_negative_cache(dns_server: DnsTestServer) -> None:
    """NXDOMAIN and NODATA are cached for negative_ttl; failures are not cached at all."""
    dns_server.add("a.test", "A", "192.0.2.1")
    dns_server.servfail("sf.test")
    r = make(dns_server, negative_ttl=0.5)
    try:
        for _ in range(3):
            await r.lookup("missing.test", "A")
            await r.lookup("a.test", "MX")
            await r.lookup("sf.test", "A")
        assert dns_server.count("missing.test") == 1
        assert dns_server.count("a.test", "MX") == 1
        assert dns_server.count("sf.test") == 3
        await asyncio.sleep(0.6)
        await r.lookup("missing.test", "A")
        assert dns_server.count("missing.test") == 2
    finally:
        await r.close()


async def test_inflight_queries_are_shared(dns_server: DnsTestServer) -> None:
    """Fifty identical concurrent lookups make one query upstream."""
    dns_server.add("shared.test", "A", "192.0.2.7")
    r = make(dns_server, cache_size=0)
    try:
        results = await asyncio.gather(*(r.lookup("shared.test", "A") for _ in range(50)))
    finally:
        await r.close()
    assert all(x.records == ("192.0.2.7",) for x in results)
    assert dns_server.count("shared.test") == 1
    assert r.stats["queries"] == 1


async def test_cancelled_caller_does_not_cancel_shared_query(dns_server: DnsTestServer) -> None:
    """A caller cut off by its stage budget leaves the shared query running for the others."""
    dns_server.add("slowish.test", "A", "192.0.2.8")
    r = make(dns_server)
    try:
        first = asyncio.ensure_future(r.lookup("slowish.test", "A"))
        second = asyncio.ensure_future(r.lookup("slowish.test", "A"))
        await asyncio.sleep(0)
        first.cancel()
        assert (await second).records == ("192.0.2.8",)
    finally:
        await r.close()


async def test_lru_bound(dns_server: DnsTestServer) -> None:
    """The cache never holds more than cache_size answers."""
    for i in range(10):
        dns_server.add(f"n{i}.test", "A", f"192.0.2.{i}")
    r = make(dns_server, cache_size=4)
    try:
        for i in range(10):
            await r.lookup(f"n{i}.test", "A")
        assert len(r._cache) == 4
    finally:
        await r.close()


async def test_lookup_blocking_from_thread(dns_server: DnsTestServer) -> None:
    """A worker thread resolves through the loop; on the loop thread it is refused."""
    dns_server.add("thread.test", "TXT", "hello")
    dns_server.drop("drop.test")
    r = make(dns_server)
    r.bind(asyncio.get_running_loop())
    try:
        got = await asyncio.to_thread(r.lookup_blocking, "thread.test", "TXT")
        assert got.records == ("hello",)
        t0 = time.monotonic()
        late = await asyncio.to_thread(r.lookup_blocking, "x.drop.test", "A", 0.1)
        assert late.status == "timeout"
        assert time.monotonic() - t0 < 0.5
        with pytest.raises(RuntimeError):
            r.lookup_blocking("thread.test", "TXT")
    finally:
        await r.close()


def test_nameserver_syntax() -> None:
    assert parse_nameserver("127.0.0.1") == "127.0.0.1:53"
    assert parse_nameserver("127.0.0.1:5353") == "127.0.0.1:5353"
    assert parse_nameserver("::1") == "[::1]:53"
    assert parse_nameserver("[::1]:5353") == "[::1]:5353"
    for bad in ("resolver.example", "127.0.0.1:0", "[::1", "1.2.3.4:x"):
        with pytest.raises(ConfigError):
            parse_nameserver(bad)


async def test_generations_share_one_resolver(dns_server: DnsTestServer) -> None:
    """Two generations bound to one resolver: the first one's close leaves it working and
    warm; an unknown record type is a programming error, not a DNS status."""
    dns_server.add("warm.test", "A", "192.0.2.3")
    r = make(dns_server)
    loop = asyncio.get_running_loop()
    r.bind(loop)
    r.bind(loop)
    assert (await r.lookup("warm.test", "A")).ok
    await r.close()
    assert (await r.lookup("warm.test", "A")).ok
    assert r.stats["cache_hits"] == 1
    with pytest.raises(ValueError, match="unsupported record type"):
        await r.lookup("warm.test", "SPF")
    await r.close()
    assert r._channel is None


def test_build_resolver_reuses_for_same_section() -> None:
    from proxy.config.schema import Config
    from proxy.dns import build_resolver

    a = build_resolver(Config(dns=DnsConfig(nameservers=["127.0.0.1:1"])))
    b = build_resolver(Config(dns=DnsConfig(nameservers=["127.0.0.1:1"])))
    c = build_resolver(Config(dns=DnsConfig(nameservers=["127.0.0.1:2"])))
    assert a is b
    assert c is not a


async def test_names_c_ares_refuses_are_asked_on_the_wire(dns_server: DnsTestServer) -> None:
    """Labels with ':', '/' or spaces are legal DNS (SPF macros make them); c-ares refuses them,
    so the resolver falls back to dnspython on the same server, and the answer is real."""
    dns_server.add("foo:bar/baz.example.com", "A", "192.0.2.9")
    dns_server.add("a  b.example.com", "TXT", "spaced")
    resolver = Resolver(DnsConfig(nameservers=[dns_server.address], timeout=1.0, retries=0))
    try:
        got = await resolver.lookup("foo:bar/baz.example.com", "A")
        assert (got.status, got.records) == ("ok", ("192.0.2.9",))
        spaced = await resolver.lookup("a  b.example.com", "TXT")
        assert (spaced.status, spaced.records) == ("ok", ("spaced",))
        missing = await resolver.lookup("no:such.example.com", "A")
        assert missing.status == "nxdomain"
        assert ("foo:bar/baz.example.com", "A") in dns_server.queries
    finally:
        await resolver.close()
