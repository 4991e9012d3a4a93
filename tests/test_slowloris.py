"""Slowloris: hundreds of connections dribbling one byte a second do not slow clean mail down.

300 connections, one or two per source address (127.0.x.y, so the per-IP limit admits them
all; the instance's limits are set explicitly for that), each get the greeting and then send
one byte a second: a command line that never ends, complete commands at one byte a second,
or, after MAIL/RCPT/DATA, a message body that never ends. Meanwhile 20 clean messages are
sent one after the other with smtplib: each gets 250 in under a second, end to end, and is at
the sink. The attackers are all still connected at the end (idle and data timeouts are 60 s
here: the attack was in effect throughout), and once they go, spamgate closes every one of
their sessions, forwards none of their unfinished messages and logs no error.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.harness.clients import Raw, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

ATTACKERS = 300
PER_IP = 2
CLEAN = 20
LATENCY_S = 1.0  # per clean message: connect, EHLO, MAIL, RCPT, DATA, QUIT
ROUNDS = 30  # the dribbler's bound: at most this many seconds, one byte per socket each


def source_ip(i: int) -> str:
    k = i // PER_IP
    return f"127.0.{1 + k // 200}.{1 + k % 200}"


class Dribbler(threading.Thread):
    """Sends the next byte of each connection's script once a second until stopped."""

    def __init__(self, conns: list[tuple[Raw, bytes]]) -> None:
        super().__init__(daemon=True)
        self.conns = conns
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []

    def run(self) -> None:
        for n in range(ROUNDS):
            if self.stop.is_set():
                return
            for c, script in self.conns:
                try:
                    c.send(script[n % len(script) : n % len(script) + 1])
                except OSError as e:  # the server dropped an attacker: recorded, checked later
                    self.errors.append(repr(e))
            self.rounds += 1
            self.stop.wait(1.0)


def open_attackers(port: int) -> list[tuple[Raw, bytes]]:
    conns: list[tuple[Raw, bytes]] = []
    for i in range(ATTACKERS):
        c = Raw(port, source_ip(i), timeout=10)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = c.reply()
        assert greeting.startswith("220 "), (i, greeting)  # admitted, not 421
        kind = i % 3
        if kind == 0:  # a command line that never ends
            script = b"EHLO slow-" + b"s" * 200
        elif kind == 1:  # complete commands, one byte a second
            script = b"NOOP\r\n"
        else:  # a message body that never ends
            c.send(b"EHLO slow.example\r\nMAIL FROM:<slow@sender.test>\r\n")
            c.send(b"RCPT TO:<slow@example.test>\r\nDATA\r\n")
            replies = [c.reply() for _ in range(4)]
            assert [r[:3] for r in replies] == ["250", "250", "250", "354"], replies
            script = b"Subject: slow\r\n\r\n" + b"dribble " * 40
        conns.append((c, script))
    return conns


def still_open(sock: socket.socket) -> bool:
    """Not closed by the server (replies to the dribbled NOOPs may be waiting: that is fine)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_slowloris_does_not_delay_clean_mail(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """300 one-byte-a-second connections held open; 20 clean messages each relayed in < 1 s."""
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "limits": {
                "max_connections": ATTACKERS + 50,
                "max_connections_per_ip": PER_IP + 2,
                # Long enough that every attacker is held through the test (and so in effect).
                "idle_timeout": "60s",
                "data_timeout": "60s",
            },
        }
    )
    conns = open_attackers(sg.port)
    dribbler = Dribbler(conns)
    dribbler.start()
    try:
        latencies = []
        for n in range(CLEAN):
            t0 = time.monotonic()
            with smtp(sg.port, "127.0.0.1", timeout=5) as client:
                refused = client.sendmail(
                    "clean@sender.test",
                    [f"clean{n}@example.test"],
                    (
                        f"From: <clean@sender.test>\r\nSubject: clean {n}\r\n"
                        f"Message-ID: <clean{n}@sender.test>\r\n\r\nclean {n}\r\n"
                    ).encode(),
                )
            latencies.append(time.monotonic() - t0)
            assert refused == {}
            time.sleep(0.25)  # spread the clean mail over several seconds of the attack
        assert dribbler.rounds >= 4, "the attack was not running during the clean mail"
        print(f"clean mail under slowloris: max {max(latencies) * 1000:.0f} ms, rounds {dribbler.rounds}")
        assert max(latencies) < LATENCY_S, latencies
        got = sorted(m.rcpts[0] for m in sink.messages if m.mail_from == "clean@sender.test")
        assert got == sorted(f"clean{n}@example.test" for n in range(CLEAN))
        # The attackers were held all along: none was closed or refused.
        assert dribbler.errors == []
        assert all(still_open(c.sock) for c, _ in conns)
        assert len(sg.events("connection")) == CLEAN
    finally:
        dribbler.stop.set()
        dribbler.join(5)
        Raw.close_all()
    # Once they go, every attacker's session is closed and accounted for.
    sg.wait_log("connection", count=CLEAN + ATTACKERS, timeout=10)
    assert not any(m.mail_from == "slow@sender.test" for m in sink.messages)  # nothing incomplete
    assert sg.events("session_error") == []
    assert "Traceback" not in sg.log_path.read_text(errors="replace")
