"""Process life: SIGTERM drain, several workers, several listen addresses (IPv4 and IPv6)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate, free_port
from tests.harness.sink import Sink


def test_sigterm_drains(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sink.state.delays = {"dot": 1.5}  # the transaction in flight is still at the downstream
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "server": {"drain_timeout": "5s"}}
    )
    idle = Raw(sg.port, "127.0.8.1")
    busy = Raw(sg.port, "127.0.8.2")
    try:
        assert idle.reply().startswith("220 ")
        assert idle.cmd("EHLO idle.test").startswith("250")
        assert busy.reply().startswith("220 ")
        assert busy.cmd("EHLO busy.test").startswith("250")
        assert busy.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        assert busy.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert busy.cmd("DATA").startswith("354")
        busy.send(message("in-flight") + b".\r\n")
        deadline = time.monotonic() + 5
        while not any(c == "DATA" for c in sink.state.commands) and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        sg.signal(signal.SIGTERM)
        assert idle.reply() == "421 4.3.2 Service shutting down, try again later"
        assert idle.closed()
        sg.wait_log("draining")
        try:  # new connections are refused (the listener is closed)
            with socket.create_connection(("127.0.0.1", sg.port), timeout=2) as s:
                assert s.recv(100) in (b"", b"421 4.3.2 Service shutting down, try again later\r\n")
        except ConnectionRefusedError:
            pass
        reply = busy.reply()
        assert reply.startswith("250 2.0.0 Ok: queued as"), reply
        assert busy.reply() == "421 4.3.2 Service shutting down, try again later"
        assert sg.proc is not None
        sg.proc.wait(6)
        assert time.monotonic() - t0 < 5
    finally:
        idle.close()
        busy.close()
    assert [b"in-flight@sender.test" in m.data for m in sink.messages] == [True]
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "delivered"
    assert sg.wait_log("stopped")


def test_drain_timeout_bounds_exit(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "server": {"drain_timeout": "1s"}}
    )
    with Raw(sg.port) as stuck:
        assert stuck.reply().startswith("220 ")
        assert stuck.cmd("EHLO stuck.test").startswith("250")
        assert stuck.cmd("MAIL FROM:<alice@sender.test>").startswith("250")  # then silence
        t0 = time.monotonic()
        sg.signal(signal.SIGTERM)
        assert stuck.reply() == "421 4.3.2 Service shutting down, try again later"
        assert sg.proc is not None
        sg.proc.wait(5)
        assert 0.9 < time.monotonic() - t0 < 3
    assert sg.wait_log("connection")[0]["closed"] == "shutdown_forced"


def test_two_workers_share_the_port(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "server": {"workers": 2},
            "limits": {"max_connections_per_ip": 1},  # per worker: at most one per worker
        },
        start=False,
    )
    sg.start(wait=False)
    sg.wait_log("started", count=2, timeout=15)
    # 16 concurrent connections from one address: each worker admits exactly one, so two
    # greetings prove both workers accept on the shared port (all 16 on one: p = 2**-15).
    held = [Raw(sg.port, "127.0.9.1") for _ in range(16)]
    try:
        greetings = [c.reply() for c in held]
    finally:
        for c in held:
            c.close()
    assert sum(g.startswith("220 ") for g in greetings) == 2, greetings
    assert sum(g.startswith("421 4.7.0") for g in greetings) == 14
    for i in range(6):
        with smtp(sg.port, f"127.0.9.{i + 10}") as c:
            c.ehlo("client.test")
            assert c.sendmail("alice@sender.test", ["bob@example.test"], message(f"w{i}")) == {}
    assert len(sink.messages) == 6
    pids = [e["pid"] for e in sg.events("started")]
    assert len(set(pids)) == 2
    assert sg.proc is not None
    sg.signal(signal.SIGTERM)
    sg.proc.wait(10)
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} still running")


def test_ipv4_and_ipv6_listeners(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    port4, port6 = free_port("127.0.0.1"), free_port("::1")
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "server": {"listen": [f"127.0.0.1:{port4}", f"[::1]:{port6}"]},
        }
    )
    with smtp(port4) as c:
        c.ehlo("v4.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("v4")) == {}
    with smtp(port6, source_ip="::1", host="::1") as c:
        c.ehlo("v6.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("v6")) == {}
    assert len(sink.messages) == 2
    assert sink.messages[1].data.startswith(b"Received: from v6.test (unknown [IPv6:::1])")
    txs = sg.wait_log("transaction", count=2)
    assert [t["client_ip"] for t in txs] == ["127.0.0.1", "::1"]
    assert sink.messages[1].xclient["ADDR"] == "IPV6:::1"


def test_sighup_reload_and_refused_reload(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@new.test")[0] == 554  # not a local domain yet
    sg.config["relay"]["local_domains"] = ["example.test", "new.test"]
    sg.write_config()
    sg.signal(signal.SIGHUP)
    sg.wait_log("reloaded")
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.sendmail("alice@sender.test", ["bob@new.test"], message("reloaded")) == {}
    sg.config["limits"] = {"max_errors": "lots"}  # invalid: the running generation stays
    sg.write_config()
    sg.signal(signal.SIGHUP)
    refused = sg.wait_log("reload_refused")[0]
    assert "limits.max_errors" in refused["error"]
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.sendmail("alice@sender.test", ["bob@new.test"], message("still-running")) == {}
    assert len(sink.messages) == 2
