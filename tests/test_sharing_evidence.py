"""Junk and protocol evidence feeds the reputation: non-SMTP input, smuggling attempts and trap
hits count as rejected mail for the client IP and its netblock (real spamgate, real clients)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


def connect_symbols(sg: Spamgate, src: str) -> list[str]:
    time.sleep(0.2)  # earlier connections' log lines are written at their close
    seen = len(sg.events("connection"))
    c = Raw(sg.port, source_ip=src)
    assert c.reply().startswith("220")
    c.cmd("QUIT")
    c.close()
    return list(sg.wait_log("connection", count=seen + 1)[-1]["symbols"])


def test_junk_and_smuggling_and_traps_count_as_rejects(sink: Sink, spamgate_factory: Factory) -> None:
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}", "local_domains": ["example.test"]},
            "checks": {
                "reputation": {"exempt_networks": [], "min_messages": 3, "penalty_rejects": 0},
                "spamtrap": {"enabled": True, "addresses": ["trap@example.test"], "exempt_networks": []},
                "penalty_box": {"enabled": False},
            },
        }
    )
    # Non-SMTP input (an HTTP request) closes the connection: twice from 127.0.3.1 ...
    for _ in range(2):
        c = Raw(sg.port, source_ip="127.0.3.1")
        assert c.reply().startswith("220")
        c.cmd("GET / HTTP/1.1")
        assert c.closed()
        c.close()
    # ... and a smuggling attempt (bare LF before a dot) from the same IP.
    c = Raw(sg.port, source_ip="127.0.3.1")
    c.reply()
    c.cmd("EHLO smuggler.test")
    c.cmd("MAIL FROM:<a@sender.test>")
    assert c.cmd("RCPT TO:<u@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<b@evil.test>\r\n.").startswith("5")
    c.cmd("QUIT")
    c.close()
    time.sleep(0.3)
    syms = connect_symbols(sg, "127.0.3.1")
    assert any(s.startswith("REPUTATION_BAD(3){ip:a=0.0,r=3.0") for s in syms), syms

    # A delivered transaction that also hit a trap counts as rejected, not accepted.
    for _ in range(3):
        c = Raw(sg.port, source_ip="127.0.4.1")
        c.reply()
        c.cmd("EHLO trapper.test")
        c.cmd("MAIL FROM:<a@sender.test>")
        assert c.cmd("RCPT TO:<u@example.test>").startswith("250")
        assert c.cmd("RCPT TO:<trap@example.test>").startswith("550 5.1.1")
        c.cmd("DATA")
        assert c.cmd(b"Subject: x\r\n\r\nhi\r\n.").startswith("250")
        c.cmd("QUIT")
        c.close()
    time.sleep(0.3)
    syms = connect_symbols(sg, "127.0.4.1")
    assert any(s.startswith("REPUTATION_BAD(3){ip:a=0.0,r=3.0") for s in syms), syms
