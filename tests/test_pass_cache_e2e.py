"""The pass cache against a store slower than every timeout: a check's timeout never cancels
or hangs the session (end to end, real sockets: a TCP listener that accepts and never answers
plays the Redis server, and a real redis-server paused with SIGSTOP)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness.clients import Raw
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate
from tests.harness.proc import Spamgate
from tests.harness.redis_server import RedisServer
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


class Silent:
    """A TCP listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


def open_fds(sg: Spamgate) -> int:
    assert sg.proc is not None
    return len(os.listdir(f"/proc/{sg.proc.pid}/fd"))


def session(sg: Spamgate, src: str) -> list[str]:
    """Greeting, EHLO, QUIT on one connection; the replies, then checks the server closed."""
    with Raw(sg.port, src, timeout=15) as c:
        out = [c.reply(), c.cmd("EHLO client.sender.test"), c.cmd("QUIT")]
        assert c.closed(5), "the session did not end after QUIT"
    return out


def gate_with_store(factory: Factory, sink: Sink, dns: DnsTestServer, url: str) -> Spamgate:
    # store.timeout above the pass cache's own bound: the pass cache's timeout fires first
    dns.add("5.0.0.127.in-addr.arpa", "PTR", "client.sender.test")
    dns.add("client.sender.test", "A", "127.0.0.5")
    return start_gate(
        factory,
        sink,
        dns,
        {
            "store": {"url": url, "timeout": "4s", "down_backoff": "0s"},
            "policy": {"stage_timeout": "6s"},
            "checks": {"rdns": {"enabled": True, "pass_ttl": "1h"}},
        },
    )


def test_silent_store_does_not_cancel_the_session(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, silent: Silent
) -> None:
    """With a store that accepts and never answers, every client still gets its greeting, EHLO
    and QUIT replies within the stage budget, the server closes each connection, and the
    number of open descriptors comes back to where it was (nothing leaks)."""
    sg = gate_with_store(spamgate_factory, sink, dns_server, silent.url)
    assert session(sg, "127.0.0.5")[0].startswith("220")  # warm up (store connection opened)
    before = open_fds(sg)
    for _ in range(3):
        t0 = time.monotonic()
        greet, ehlo, quit_ = session(sg, "127.0.0.5")
        assert greet.startswith("220"), greet
        assert ehlo.startswith("250"), ehlo
        assert quit_.startswith("221"), quit_
        assert time.monotonic() - t0 < 6.5
    conns = sg.wait_log("connection", count=4, client_ip="127.0.0.5")
    assert [c["closed"] for c in conns] == ["quit"] * 4  # ended by QUIT, not cancelled
    deadline = time.monotonic() + 5
    while open_fds(sg) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(sg) <= before


def test_paused_redis_does_not_cancel_the_session(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, redis_server: RedisServer
) -> None:
    """A real redis-server stopped with SIGSTOP: the clients are still answered and let go."""
    sg = gate_with_store(spamgate_factory, sink, dns_server, redis_server.url)
    assert session(sg, "127.0.0.5")[0].startswith("220")
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        greet, ehlo, quit_ = session(sg, "127.0.0.6")
        assert greet.startswith("220"), greet
        assert ehlo.startswith("250"), ehlo
        assert quit_.startswith("221"), quit_
        assert sg.wait_log("connection", client_ip="127.0.0.6")[-1]["closed"] == "quit"
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
