"""Unit tests of the state checks' building blocks: limits, netblocks, config validation,
the greylist reply template, and the checks themselves over a memory store."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.checks.base import CheckContext, Services, Stage
from proxy.checks.connect.ratelimit import parse_limit
from proxy.checks.rcpt.greylist import Greylist
from proxy.config.fields import ConfigError
from proxy.config.loader import from_dict
from proxy.model import Connection, Transaction
from proxy.state.memory import MemoryStore
from proxy.state.util import netblock


def test_parse_limit() -> None:
    assert parse_limit("100/1m") == (100, 60.0)
    assert parse_limit("5/250ms") == (5, 0.25)
    assert parse_limit("") is None
    for bad in ("100", "x/1m", "10/0s", "10/soon"):
        with pytest.raises(ConfigError):
            parse_limit(bad, "p")


def test_netblock() -> None:
    assert netblock(ipaddress.ip_address("192.0.2.77"), 24, 64) == "192.0.2.0/24"
    assert netblock(ipaddress.ip_address("2001:db8:1:2:3::4"), 24, 64) == "2001:db8:1:2::/64"
    assert netblock(ipaddress.ip_address("192.0.2.77"), 32, 64) == "192.0.2.77/32"


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"checks\.ratelimit\.messages_per_ip"):
        from_dict({"checks": {"ratelimit": {"messages_per_ip": "lots"}}})
    with pytest.raises(ConfigError, match=r"store\.url"):
        from_dict({"store": {"url": "mysql://db"}})
    with pytest.raises(ConfigError, match="service name"):
        from_dict({"store": {"url": "redis+sentinel://a:26379"}})
    with pytest.raises(ConfigError, match=r"checks\.greylist\.on_store_error"):
        from_dict({"checks": {"greylist": {"on_store_error": "panic"}}})
    cfg = from_dict({"checks": {"ratelimit": {"messages_per_ip": ""}}, "store": {"url": "memory://"}})
    assert cfg.checks["ratelimit"].messages_per_ip == ""
    assert cfg.checks["greylist"].enabled  # on by default


def _ctx(
    ip: str, score: float, fired: frozenset[str] = frozenset(), spf: tuple[str, str] | None = None
) -> CheckContext:
    conn = Connection(id="c1", ip=ipaddress.ip_address(ip), port=1, peer=(ip, 1))
    txn = Transaction(ref="c1.1", mail_from="a@sender.test", mail_params={})
    if spf:
        txn.notes["spf"] = spf
    return CheckContext(Stage.RCPT, conn, txn, rcpt="u@example.test", fired=fired, score=score)


async def _greylist(**over: object) -> Greylist:
    cfg = from_dict({"checks": {"greylist": {"delay": "1s", **over}}})
    g = Greylist(cfg.checks["greylist"], Services(config=cfg, store=MemoryStore(1.0)))
    await g.start()
    return g


async def test_greylist_min_score_and_skips() -> None:
    g = await _greylist()
    assert await g.check(_ctx("192.0.2.1", 0.0)) == []  # below min_score 3
    hits = await g.check(_ctx("192.0.2.1", 3.0))
    assert [h.name for h in hits] == ["GREYLISTED"]
    assert hits[0].evidence == "1"
    assert await g.check(_ctx("192.0.2.1", 9.0, frozenset({"IP_ALLOWLISTED"}))) == []
    assert await g.check(_ctx("192.0.2.1", 9.0, frozenset({"DNSWL_MED"}))) == []
    assert await g.check(_ctx("192.0.2.1", 9.0, frozenset({"REPUTATION_GOOD"}))) == []
    assert [h.name for h in await g.check(_ctx("192.0.2.1", 9.0, frozenset({"RBL_X"})))] == ["GREYLISTED"]


async def test_greylist_spf_domain_allowlist() -> None:
    import asyncio

    g = await _greylist(allowlist_after=1, delay="200ms")
    spf = ("pass", "sender.test")
    assert [h.name for h in await g.check(_ctx("192.0.2.1", 5, spf=spf))] == ["GREYLISTED"]
    await asyncio.sleep(0.25)
    assert [h.evidence for h in await g.check(_ctx("192.0.2.1", 5, spf=spf))] == ["retried"]
    # Another network of the same SPF-authorised domain is not delayed.
    hits = await g.check(_ctx("198.51.100.9", 5, spf=spf))
    assert [h.evidence for h in hits] == ["allowlisted:sender.test"]
    assert [h.name for h in await g.check(_ctx("198.51.100.9", 5))] == ["GREYLISTED"]  # no SPF pass


async def test_reputation_falls_back_to_the_netblock() -> None:
    from proxy.checks.connect.reputation import Reputation

    cfg = from_dict({"checks": {"reputation": {"min_messages": 3, "penalty_rejects": 0}}})
    services = Services(config=cfg, store=MemoryStore(1.0))
    rep = Reputation(cfg.checks["reputation"], services)
    await rep.start()

    def conn(ip: str) -> Connection:
        return Connection(id="c", ip=ipaddress.ip_address(ip), port=1, peer=(ip, 1))

    for _ in range(4):
        await rep._record(conn("192.0.2.10"), rejected=True)
    bad = await rep.check(CheckContext(Stage.CONNECT, conn("192.0.2.10")))
    assert [(h.name, h.evidence.split(":")[0]) for h in bad] == [("REPUTATION_BAD", "ip")]
    # A neighbour without its own history inherits the netblock's.
    near = await rep.check(CheckContext(Stage.CONNECT, conn("192.0.2.99")))
    assert [(h.name, h.evidence.split(":")[0]) for h in near] == [("REPUTATION_BAD", "net")]
    assert await rep.check(CheckContext(Stage.CONNECT, conn("198.51.100.1"))) == []
    # The neighbour's own clean history wins over the netblock's.
    for _ in range(4):
        await rep._record(conn("192.0.2.99"), rejected=False)
    own = await rep.check(CheckContext(Stage.CONNECT, conn("192.0.2.99")))
    assert [(h.name, h.evidence.split(":")[0]) for h in own] == [("REPUTATION_GOOD", "ip")]
    # Loopback is exempt by default (even with a bad history).
    for _ in range(4):
        await rep._record(conn("127.0.0.1"), rejected=True)
    assert await rep.check(CheckContext(Stage.CONNECT, conn("127.0.0.1"))) == []
