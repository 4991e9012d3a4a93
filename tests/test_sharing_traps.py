"""Spamtraps, the fleet-wide penalty box and the recipient cache, end to end: two spamgate
instances sharing a real redis-server, real SMTP clients bound to different 127.x addresses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.harness.admin import get, sample
from tests.harness.clients import Raw
from tests.harness.proc import Spamgate, deep_merge, free_port
from tests.harness.redis_server import RedisServer
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
NOEXEMPT = {"exempt_networks": []}
LOCAL = ["example.test", "deep.traps.test"]


def config(sink: Sink, redis: RedisServer, **checks: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}", "local_domains": LOCAL},
        "store": {"url": redis.url},
        "checks": {"penalty_box": NOEXEMPT},
    }
    return deep_merge(base, {"checks": checks})


def session(sg: Spamgate, src: str) -> Raw:
    c = Raw(sg.port, source_ip=src)
    assert c.reply().startswith("220"), "greeting"
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@sender.test>").startswith("250")
    return c


def sink_rcpts(sink: Sink, addr: str) -> int:
    return sum(1 for c in sink.state.commands if c.upper().startswith("RCPT") and addr in c.lower())


def wait_boxed(sg: Spamgate, src: str, timeout: float = 5.0) -> str:
    """The greeting a new connection from ``src`` gets once the penalty landed in the store."""
    deadline = time.monotonic() + timeout
    while True:
        c = Raw(sg.port, source_ip=src)
        greet = c.reply()
        c.close()
        if greet.startswith("421") or time.monotonic() > deadline:
            return greet
        time.sleep(0.1)


def refused_symbols(sg: Spamgate, timeout: float = 5.0) -> str:
    """The symbols of the last connection refused at connect (its log line is written at close)."""
    deadline = time.monotonic() + timeout
    while True:
        boxed = [e for e in sg.events("connection") if e.get("reply")]
        if boxed or time.monotonic() > deadline:
            assert boxed, "no refused connection in the log"
            return " ".join(boxed[-1]["symbols"])
        time.sleep(0.05)


def test_trap_hit_is_refused_like_unknown_user_and_boxed_fleet_wide(
    sink: Sink, spamgate_factory: Factory, redis_server: RedisServer
) -> None:
    trap = {"enabled": True, "addresses": ["Trap@Example.test"], "domains": [".traps.test"], **NOEXEMPT}
    cfg = config(sink, redis_server, spamtrap=trap)
    admin = free_port()
    a = spamgate_factory(deep_merge(cfg, {"metrics": {"listen": f"127.0.0.1:{admin}"}}))
    b = spamgate_factory(cfg)

    c = session(a, "127.0.0.7")
    assert c.cmd("RCPT TO:<ok@example.test>").startswith("250")
    r = c.cmd("RCPT TO:<trap@example.test>")
    assert r.startswith("550 5.1.1 ")
    assert "User unknown" in r
    assert "trap" not in r.replace("<trap@example.test>", "").lower()
    assert sink_rcpts(sink, "trap@example.test") == 0  # never relayed
    c.cmd("QUIT")
    c.close()

    # Instance B, same store: the trapper is refused at its next connection; others are not.
    assert wait_boxed(b, "127.0.0.7").startswith("421 4.7.0")
    ok = Raw(b.port, source_ip="127.0.0.8")
    assert ok.reply().startswith("220")
    ok.close()
    assert "PENALTY_BOX(0){TRAP_HIT{trap@example.test};until=" in refused_symbols(b)

    # A trap subdomain on B boxes another client too; the log names the trap.
    c = session(b, "127.0.0.9")
    assert c.cmd("RCPT TO:<x@deep.traps.test>").startswith("550 5.1.1")
    c.cmd("QUIT")
    c.close()
    assert wait_boxed(a, "127.0.0.9").startswith("421 4.7.0")
    txn = b.wait_log("transaction")[-1]
    assert any(s.startswith("TRAP_HIT(0){x@deep.traps.test}") for s in txn["symbols"])
    text = get(admin, "/metrics")[1]
    assert sample(text, "spamgate_sharing_events_total", event="trap_hit") == 1
    assert sample(text, "spamgate_sharing_events_total", event="penalty_added") == 1
    assert sample(text, "spamgate_sharing_events_total", event="penalty_refused") == 1


def test_trap_in_observe_mode_boxes_nobody(
    sink: Sink, spamgate_factory: Factory, redis_server: RedisServer
) -> None:
    trap = {"enabled": True, "mode": "observe", "addresses": ["trap@example.test"], **NOEXEMPT}
    sg = spamgate_factory(config(sink, redis_server, spamtrap=trap))
    c = session(sg, "127.0.0.12")
    assert c.cmd("RCPT TO:<trap@example.test>").startswith("250")  # relayed, only logged
    c.cmd("QUIT")
    c.close()
    time.sleep(0.3)
    assert Raw(sg.port, source_ip="127.0.0.12").reply().startswith("220")
    assert redis_server.cli("KEYS", "*pbox*").strip() == ""


def test_recipient_cache_and_dictionary_attack_across_instances(
    sink: Sink, spamgate_factory: Factory, redis_server: RedisServer
) -> None:
    rc = {"enabled": True, "dictionary_threshold": 4, "penalty_time": "1m", **NOEXEMPT}
    cfg = config(sink, redis_server, recipient_cache=rc)
    a, b = spamgate_factory(cfg), spamgate_factory(cfg)
    sink.state.reject_rcpts = {f"gone{i}@example.test" for i in range(5)}

    c = session(a, "127.0.0.20")
    assert c.cmd("RCPT TO:<gone0@example.test>").startswith("550 5.1.1")  # the downstream's
    c.cmd("QUIT")
    c.close()
    assert sink_rcpts(sink, "gone0@example.test") == 1
    time.sleep(0.3)

    # Another client on instance B: answered from the shared cache, no downstream round trip.
    c = session(b, "127.0.0.21")
    r = c.cmd("RCPT TO:<Gone0@example.test>")
    assert r.startswith("550 5.1.1 ")
    assert "[ref " in r
    assert sink_rcpts(sink, "gone0@example.test") == 1
    assert c.cmd("RCPT TO:<ok@example.test>").startswith("250")
    c.cmd("QUIT")
    c.close()
    txn = b.wait_log("transaction")[-1]
    assert any(s.startswith("RCPT_UNKNOWN_CACHED(0){Gone0@example.test}") for s in txn["symbols"])

    # A dictionary attack: the 4th unknown recipient within the window boxes the client.
    c = session(a, "127.0.0.22")
    for i in range(1, 4):
        assert c.cmd(f"RCPT TO:<gone{i}@example.test>").startswith("550 5.1.1")
    time.sleep(0.3)
    assert c.cmd("RCPT TO:<gone0@example.test>").startswith("550 5.1.1")  # cached: the 4th
    r = c.cmd("RCPT TO:<ok@example.test>")
    assert r.startswith("451 4.7.1"), r
    c.cmd("QUIT")
    c.close()
    assert wait_boxed(b, "127.0.0.22").startswith("421 4.7.0")
    assert "PENALTY_BOX(0){RCPT_DICTIONARY{4};until=" in refused_symbols(b)
