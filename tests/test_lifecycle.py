"""Process lifecycle: SIGTERM drain, several workers, several listen addresses (IPv4 + IPv6)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest

from tests.harness.clients import Raw, smtp
from tests.harness.proc import Spamgate, free_port
from tests.harness.sink import Sink


def _in_txn(port: int, source: str) -> Raw:
    c = Raw(port, source)
    assert c.reply().startswith("220")
    assert c.cmd("EHLO client.sender.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    return c


def _refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(100) == b""
    except OSError:
        return True


def test_sigterm_drain(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "server": {"drain_timeout": "5s"}}
    )
    busy = _in_txn(sg.port, "127.0.3.1")
    idle = Raw(sg.port, "127.0.3.2")
    assert idle.reply().startswith("220")
    assert idle.cmd("EHLO idle.sender.test").startswith("250")
    t0 = time.monotonic()
    sg.signal(signal.SIGTERM)
    # The idle session is told at once.
    assert idle.reply() == "421 4.3.2 Service shutting down, try again later"
    assert idle.closed()
    # No new connections.
    assert _refused(sg.port)
    # The transaction in flight finishes and is delivered, then the session is closed.
    assert busy.cmd("DATA").startswith("354")
    assert busy.cmd(b"Subject: drain\r\n\r\nhi\r\n.").startswith("250 ")
    assert busy.reply() == "421 4.3.2 Service shutting down, try again later"
    assert busy.closed()
    assert sg.proc is not None
    sg.proc.wait(5)
    assert time.monotonic() - t0 < 5
    assert len(sink.messages) == 1
    assert sg.wait_log("stopped")


def test_sigterm_drain_timeout_forces(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "server": {"drain_timeout": "1s"}}
    )
    busy = _in_txn(sg.port, "127.0.3.3")
    t0 = time.monotonic()
    sg.signal(signal.SIGTERM)
    assert busy.reply() == "421 4.3.2 Service shutting down, try again later"
    assert busy.closed()
    assert sg.proc is not None
    sg.proc.wait(5)
    assert 0.8 < time.monotonic() - t0 < 4
    assert sink.messages == []
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "aborted"


def test_two_workers(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "server": {"workers": 2}})
    sg.wait_log("started", count=2)
    # Hold many connections open at once: SO_REUSEPORT spreads them over both workers.
    clients = [Raw(sg.port, f"127.0.4.{i + 1}") for i in range(24)]
    for c in clients:
        assert c.reply().startswith("220")
        assert c.cmd("QUIT").startswith("221")
    pids = {e["pid"] for e in sg.wait_log("connection", count=24)}
    assert len(pids) == 2
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], b"Subject: w\r\n\r\nhi\r\n") == {}
    assert sg.proc is not None
    t0 = time.monotonic()
    assert sg.stop() == 0
    assert time.monotonic() - t0 < 5
    assert len(sg.events("stopped")) == 2
    assert _refused(sg.port)


def test_ipv4_and_ipv6_listeners(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}}, start=False)
    p6 = free_port("::1")
    sg.config["server"]["listen"] = [f"127.0.0.1:{sg.port}", f"[::1]:{p6}"]
    sg.start()
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], b"Subject: v4\r\n\r\nhi\r\n") == {}
    with smtp(p6, source_ip="::1", host="::1") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], b"Subject: v6\r\n\r\nhi\r\n") == {}
    assert len(sink.messages) == 2
    ips = [t["client_ip"] for t in sg.wait_log("transaction", count=2)]
    assert ips == ["127.0.0.1", "::1"]
    assert b"[IPv6:::1]" in sink.messages[1].data or b"::1" in sink.messages[1].data


@pytest.mark.parametrize("bad", ["[::1:25", "127.0.0.1:99999"])
def test_bad_listen_refused(spamgate_factory: Callable[..., Spamgate], bad: str) -> None:
    sg = spamgate_factory(start=False)
    sg.config["server"]["listen"] = [bad]
    with pytest.raises(RuntimeError, match="server.listen"):
        sg.start()


def test_sighup_reload_and_refused_reload(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "limits": {"max_recipients": 1}}
    )
    held = Raw(sg.port, "127.0.12.1")  # a session in progress keeps its generation
    assert held.reply().startswith("220")
    sg.config["limits"]["max_recipients"] = 2
    sg.write_config()
    sg.signal(signal.SIGHUP)
    sg.wait_log("reloaded")
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        c.mail("alice@sender.test")
        assert c.rcpt("a@example.test")[0] == 250
        assert c.rcpt("b@example.test")[0] == 250
    # A broken file is refused; the running configuration stays.
    sg.config_path.write_text("[limits]\nmax_recipients = 'many'\n")
    sg.signal(signal.SIGHUP)
    refused = sg.wait_log("reload_refused")[0]
    assert "limits.max_recipients" in refused["error"]
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        c.mail("alice@sender.test")
        assert c.rcpt("a@example.test")[0] == 250
        assert c.rcpt("b@example.test")[0] == 250
        assert c.rcpt("c@example.test")[0] == 452
    assert held.cmd("NOOP").startswith("250")
