"""Greylisting, rate/concurrency limits and reputation end to end: real spamgate processes,
a real redis-server shared by two instances, SQLite shared by two workers, Redis outages."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate, deep_merge
from tests.harness.redis_server import RedisCluster, RedisSentinel, RedisServer
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


# The tests' clients are on loopback, which the limits and reputation exempt by default.
LOOPBACK_COUNTS = {"checks": {"ratelimit": {"exempt_networks": []}, "reputation": {"exempt_networks": []}}}


@pytest.fixture
def factory(spamgate_factory: Factory) -> Factory:
    def make(config: dict[str, Any] | None = None, **kw: Any) -> Spamgate:
        return spamgate_factory(deep_merge(LOOPBACK_COUNTS, config or {}), **kw)

    return make


def attempt(
    sg: Spamgate, src: str = "127.0.0.1", sender: str = "a@sender.test", rcpt: str = "u@example.test"
) -> str:
    """One delivery attempt; returns the first non-2xx reply, or the DATA final reply."""
    c = Raw(sg.port, source_ip=src)
    try:
        greet = c.reply()
        if not greet.startswith("220"):
            return greet
        c.cmd("EHLO client.sender.test")
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if not r.startswith("250"):
            return r
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        if not r.startswith("250"):
            return r
        c.cmd("DATA")
        return c.cmd(b"Subject: t\r\nFrom: <a@sender.test>\r\n\r\nhello\r\n.")
    finally:
        try:  # QUIT: the transaction's log line is written before the 221
            c.cmd("QUIT")
        except OSError:
            pass
        c.sock.close()


def greylist_cfg(sink: Sink, store: str, **gl: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "enabled": True,
        "exempt_networks": [],
        "delay": "1s",
        "min_score": 0.0,
        "allowlist_after": 0,
    }
    opts.update(gl)
    return {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "store": {"url": store},
        "checks": {"greylist": opts},
    }


def test_greylisting_cases(sink: Sink, factory: Factory) -> None:
    sg = factory(greylist_cfg(sink, "memory://"))
    first = attempt(sg, "127.0.0.2")
    assert first.startswith("451 4.7.1")
    assert "try again in 1 seconds" in first
    assert attempt(sg, "127.0.0.2").startswith("451 4.7.1")  # early retry
    time.sleep(1.1)
    assert attempt(sg, "127.0.0.2").startswith("250")  # retry after the delay
    assert len(sink.messages) == 1
    assert attempt(sg, "127.0.0.2").startswith("250")  # known triplet
    # Same /24 (the retry may come from another host of the pool): still known.
    assert attempt(sg, "127.0.0.3").startswith("250")
    # A new triplet is greylisted anew.
    assert attempt(sg, "127.0.0.2", rcpt="other@example.test").startswith("451 4.7.1")
    assert attempt(sg, "127.0.0.2", sender="b@sender.test").startswith("451 4.7.1")
    assert attempt(sg, "127.0.1.2").startswith("451 4.7.1")  # another /24
    syms = [s for t in sg.wait_log("transaction", count=8) for s in t["symbols"]]
    assert any(s.startswith("GREYLISTED(") for s in syms)
    assert any(s.startswith("GREYLIST_PASS(0){retried}") for s in syms)


def test_greylist_skips_clean_allowlisted_and_relay_clients(sink: Sink, factory: Factory) -> None:
    cfg = greylist_cfg(sink, "memory://", min_score=3.0)
    cfg["checks"]["static_lists"] = {"allow": ["127.0.0.9"]}
    cfg["relay"]["relay_networks"] = ["127.0.0.10/32"]
    sg = factory(cfg)
    assert attempt(sg, "127.0.0.2").startswith("250")  # score 0 < min_score 3: not delayed
    sg2 = factory(
        greylist_cfg(sink, "memory://", min_score=-1000.0)
        | {
            "checks": {
                "greylist": {"enabled": True, "exempt_networks": [], "delay": "1s", "min_score": -1000.0},
                "static_lists": {"allow": ["127.0.0.9"]},
            },
            "relay": {"downstream": f"127.0.0.1:{sink.port}", "relay_networks": ["127.0.0.10/32"]},
        }
    )
    assert attempt(sg2, "127.0.0.9").startswith("250")  # IP_ALLOWLISTED
    assert attempt(sg2, "127.0.0.10").startswith("250")  # relay_networks
    assert attempt(sg2, "127.0.0.2").startswith("451 4.7.1")  # everyone else is greylisted


def test_greylist_auto_allowlists_the_netblock(sink: Sink, factory: Factory) -> None:
    sg = factory(greylist_cfg(sink, "memory://", allowlist_after=1))
    assert attempt(sg, "127.0.4.2").startswith("451")
    time.sleep(1.1)
    assert attempt(sg, "127.0.4.2").startswith("250")
    # One passed triplet allowlists 127.0.4.0/24: a new triplet from it is not delayed.
    assert attempt(sg, "127.0.4.7", sender="new@else.test", rcpt="x@example.test").startswith("250")
    assert "GREYLIST_PASS(0){allowlisted:127.0.4.0/24}" in sg.wait_log("transaction", count=3)[-1]["symbols"]
    assert attempt(sg, "127.0.5.7").startswith("451")


def test_two_instances_share_redis(sink: Sink, factory: Factory, redis_server: RedisServer) -> None:
    cfg = greylist_cfg(sink, redis_server.url)
    cfg["checks"]["ratelimit"] = {"messages_per_ip": "3/1m", "concurrency_per_ip": 2}
    a = factory(cfg)
    b = factory(cfg)
    # Greylisted on A, passes on B after the delay.
    assert attempt(a, "127.0.0.2").startswith("451 4.7.1")
    assert attempt(b, "127.0.0.2").startswith("451 4.7.1")
    time.sleep(1.1)
    assert attempt(b, "127.0.0.2").startswith("250")
    # That was message 3 of 127.0.0.2 within the minute (counted on A and B): the next is deferred.
    r = attempt(a, "127.0.0.2")
    assert r.startswith("451 4.7.1")
    assert "rate limit" in r
    assert "RATELIMIT_MESSAGES" in " ".join(a.wait_log("transaction", count=2)[-1]["symbols"])
    # Concurrency per IP counts both instances.
    c1, c2 = Raw(a.port, source_ip="127.0.0.3"), Raw(b.port, source_ip="127.0.0.3")
    assert c1.reply().startswith("220")
    assert c2.reply().startswith("220")
    c3 = Raw(a.port, source_ip="127.0.0.3")
    r3 = c3.reply()
    assert r3.startswith("421 4.7.0")
    assert "concurrent" in r3
    c1.cmd("QUIT")
    c1.sock.close()
    deadline = time.monotonic() + 5
    while True:  # the slot is released when the session closes
        c4 = Raw(b.port, source_ip="127.0.0.3")
        ok = c4.reply().startswith("220")
        c4.sock.close()
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ok
    c2.cmd("QUIT")
    c2.sock.close()
    c3.sock.close()


def test_redis_outage_continue_tempfail_and_recovery(
    sink: Sink, factory: Factory, redis_server: RedisServer
) -> None:
    cfg = greylist_cfg(sink, redis_server.url)
    cfg["store"]["timeout"] = "300ms"
    cont = factory(cfg)
    strict_cfg = greylist_cfg(sink, redis_server.url, on_store_error="tempfail")
    strict_cfg["store"]["timeout"] = "300ms"
    strict = factory(strict_cfg)
    assert attempt(cont, "127.0.0.2").startswith("451")
    redis_server.stop()
    t0 = time.monotonic()
    assert attempt(cont, "127.0.0.5").startswith("250")  # continue: accepted, not greylisted
    assert time.monotonic() - t0 < 5
    syms = " ".join(cont.wait_log("transaction", count=2)[-1]["symbols"])
    assert "STORE_TEMPERROR(0)" in syms
    assert "GREYLIST" not in syms
    r = attempt(strict, "127.0.0.5")
    assert r.startswith("451")
    assert "STORE_TEMPFAIL" in " ".join(strict.wait_log("transaction")[-1]["symbols"])
    assert cont.events("store_error")
    redis_server.start()  # same port
    deadline = time.monotonic() + 10
    while True:
        r = attempt(cont, "127.0.0.6", rcpt=f"n{int(time.monotonic() * 1000)}@example.test")
        if r.startswith("451 4.7.1 ") and "Greylisted" in r or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Greylisted" in r  # state works again


def test_connect_limits_tempfail_with_421(sink: Sink, factory: Factory) -> None:
    sg = factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "checks": {"ratelimit": {"connections_per_ip": "2/1m"}},
        }
    )
    for _ in range(2):
        c = Raw(sg.port, source_ip="127.0.0.2")
        assert c.reply().startswith("220")
        c.cmd("QUIT")
        c.sock.close()
    c = Raw(sg.port, source_ip="127.0.0.2")
    r = c.reply()
    assert r.startswith("421 4.7.0")
    assert c.closed()
    c.sock.close()
    c = Raw(sg.port, source_ip="127.0.0.3")  # another IP is not affected
    assert c.reply().startswith("220")
    c.sock.close()


def test_recipient_rate_limit_per_sender_domain(sink: Sink, factory: Factory) -> None:
    sg = factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "checks": {"ratelimit": {"recipients_per_sender_domain": "3/1m"}},
        }
    )
    c = Raw(sg.port, source_ip="127.0.0.2")
    c.reply()
    c.cmd("EHLO x.test")
    assert c.cmd("MAIL FROM:<a@bulk.test>").startswith("250")
    replies = [c.cmd(f"RCPT TO:<u{i}@example.test>") for i in range(4)]
    assert [r[:3] for r in replies] == ["250", "250", "250", "451"]
    c.cmd("QUIT")
    c.sock.close()


def test_reputation_and_penalty_box(sink: Sink, factory: Factory, redis_server: RedisServer) -> None:
    rep = {"min_messages": 2, "penalty_rejects": 2, "penalty_time": "30s"}
    sg = factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "store": {"url": redis_server.url},
            "checks": {"reputation": rep},
        }
    )
    for _ in range(2):
        assert attempt(sg, "127.0.0.2").startswith("250")
    sink.state.data_reply = "550 5.7.1 Go away"
    for _ in range(2):
        assert attempt(sg, "127.0.0.3").startswith("550")
    sink.state.data_reply = ""
    time.sleep(0.3)  # reputation is recorded after the transaction line
    assert attempt(sg, "127.0.0.2").startswith("250")
    last = sg.wait_log("transaction", count=5)[-1]
    assert any(s.startswith("REPUTATION_GOOD(-2){ip:") for s in last["symbols"])
    c = Raw(sg.port, source_ip="127.0.0.3")
    r = c.reply()
    assert r.startswith("421 4.7.0")
    assert "rejected" in r
    c.sock.close()
    boxed = [e for e in sg.wait_log("connection", count=6) if e.get("reply")]
    syms = " ".join(boxed[-1]["symbols"])
    assert "REPUTATION_PENALTY" in syms
    assert "REPUTATION_BAD(3){ip:" in syms


def test_reputable_client_is_not_greylisted(sink: Sink, factory: Factory, redis_server: RedisServer) -> None:
    base = {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "store": {"url": redis_server.url}}
    a = factory(base | {"checks": {"reputation": {"min_messages": 2}}})
    for _ in range(3):
        assert attempt(a, "127.0.0.4").startswith("250")
    time.sleep(0.3)
    b = factory(
        base
        | {
            "checks": {
                "reputation": {"min_messages": 2},
                "greylist": {"enabled": True, "exempt_networks": [], "delay": "1s", "min_score": -1000.0},
            }
        }
    )
    assert attempt(b, "127.0.0.4").startswith("250")
    assert attempt(b, "127.0.8.4").startswith("451")


@pytest.mark.slow
def test_sqlite_shared_by_two_workers(sink: Sink, factory: Factory) -> None:
    cfg = greylist_cfg(sink, "sqlite:///state/state.db")
    cfg["server"] = {"workers": 2}
    cfg["checks"]["ratelimit"] = {"messages_per_ip": "4/1m"}
    sg = factory(cfg)
    sg.wait_log("started", count=2)
    # Each attempt is a new connection; SO_REUSEPORT spreads them over both workers.
    assert attempt(sg, "127.0.0.2").startswith("451 4.7.1")
    assert attempt(sg, "127.0.0.2").startswith("451 4.7.1")
    time.sleep(1.1)
    results = [attempt(sg, "127.0.0.2")[:3] for _ in range(4)]
    assert results == ["250", "250", "451", "451"]
    assert (sg.dir / "state" / "state.db").exists()
    pids = {e.get("pid") for e in sg.events("started")}
    assert len(pids) == 2


def test_slots_of_a_dead_instance_expire(sink: Sink, factory: Factory, redis_server: RedisServer) -> None:
    cfg = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "store": {"url": redis_server.url},
        "checks": {"ratelimit": {"concurrency_per_ip": 1, "slot_ttl": "1500ms"}},
    }
    a = factory(cfg)
    b = factory(cfg)
    held = Raw(a.port, source_ip="127.0.0.2")
    assert held.reply().startswith("220")
    # A long session keeps its slot: it is refreshed while the connection lives.
    time.sleep(2.0)
    c = Raw(b.port, source_ip="127.0.0.2")
    assert c.reply().startswith("421 4.7.0")
    c.sock.close()
    assert a.proc is not None
    a.proc.kill()  # the instance dies without releasing its slot
    a.proc.wait()
    held.sock.close()
    c = Raw(b.port, source_ip="127.0.0.2")
    assert c.reply().startswith("421 4.7.0")  # still held...
    c.sock.close()
    time.sleep(1.6)
    c = Raw(b.port, source_ip="127.0.0.2")
    assert c.reply().startswith("220")  # ...until it expired
    c.cmd("QUIT")
    c.sock.close()


def test_reload_keeps_state(sink: Sink, factory: Factory) -> None:
    import signal

    sg = factory(greylist_cfg(sink, "memory://"))
    assert attempt(sg, "127.0.0.2").startswith("451 4.7.1")
    sg.signal(signal.SIGHUP)
    sg.wait_log("reloaded")
    time.sleep(1.1)
    assert attempt(sg, "127.0.0.2").startswith("250")  # the same store survived the reload


@pytest.mark.slow
@pytest.mark.parametrize("deployment", ["sentinel", "cluster"])
def test_fleet_deployments(sink: Sink, factory: Factory, tmp_path: Path, deployment: str) -> None:
    """Greylisting and a rate limit through Sentinel and through a 3-master Cluster."""
    if deployment == "sentinel":
        master = RedisServer(tmp_path / "master").start()
        sentinel = RedisSentinel(tmp_path / "sentinel", master).start()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
        servers: list[Any] = [sentinel, master]
    else:
        cluster = RedisCluster(tmp_path / "cluster").start()
        url = cluster.url
        servers = [cluster]
    try:
        cfg = greylist_cfg(sink, url)
        cfg["checks"]["ratelimit"] = {"messages_per_ip": "3/1m"}
        a, b = factory(cfg), factory(cfg)
        assert attempt(a, "127.0.0.2").startswith("451 4.7.1 ")
        time.sleep(1.1)
        assert attempt(b, "127.0.0.2").startswith("250")
        assert attempt(a, "127.0.0.2").startswith("250")
        r = attempt(b, "127.0.0.2")
        assert r.startswith("451 4.7.1")
        assert "rate limit" in r
        assert not a.events("store_error")
        assert not b.events("store_error")
    finally:
        for s in servers:
            s.stop()


def test_loopback_is_exempt_by_default(sink: Sink, spamgate_factory: Factory) -> None:
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "checks": {"ratelimit": {"connections_per_ip": "1/1m", "messages_per_ip": "1/1m"}},
        }
    )
    for _ in range(3):
        assert attempt(sg, "127.0.0.2").startswith("250")


def test_ipv6_client_greylisted_by_its_64(sink: Sink, factory: Factory) -> None:
    sg = factory(greylist_cfg(sink, "memory://"), host="::1", start=False)
    sg.config["server"]["listen"] = [f"[::1]:{sg.port}"]
    sg.start()
    c = Raw(sg.port, source_ip="::1", host="::1")
    assert c.reply().startswith("220")
    c.cmd("EHLO v6.sender.test")
    c.cmd("MAIL FROM:<a@sender.test>")
    r = c.cmd("RCPT TO:<u@example.test>")
    assert r.startswith("451 4.7.1")
    c.cmd("QUIT")
    c.sock.close()
    t = sg.wait_log("transaction")[-1]
    assert t["client_ip"] == "::1"
    assert "GREYLISTED(0){1}" in t["symbols"]


def test_ratelimit_disabled_turns_off_all_stages(sink: Sink, factory: Factory) -> None:
    sg = factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "checks": {
                "ratelimit": {"enabled": False, "messages_per_ip": "1/1m", "recipients_per_ip": "1/1m"}
            },
        }
    )
    for i in range(3):
        assert attempt(sg, "127.0.0.2", rcpt=f"u{i}@example.test").startswith("250")
