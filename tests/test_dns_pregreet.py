"""Pregreet: a multi-line greeting whose end a real client waits for; early talkers score
PREGREET and can be rejected by a rule; exempt and passed clients get the plain greeting."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.harness.clients import Raw
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import send, start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
ON = {"checks": {"pregreet": {"enabled": True, "greet_delay": "400ms"}}}


def test_patient_client_passes(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> None:
    """The greeting is '220-' then, after greet_delay, '220 '; a client that waits is clean."""
    sg = start_gate(spamgate_factory, sink, dns_server, ON)
    t0 = time.monotonic()
    raw = Raw(sg.port, "127.0.0.5")
    greeting = raw.reply()
    took = time.monotonic() - t0
    assert greeting.splitlines()[0] == "220-mx.spamgate.test ESMTP"
    assert greeting.splitlines()[-1].startswith("220 mx.spamgate.test")
    assert 0.35 < took < 1.5, took
    assert raw.cmd("QUIT").startswith("221")
    raw.close()
    assert send(sg, "127.0.0.6").get("ok")
    assert "PREGREET" not in symbols(sg.wait_log("transaction", client_ip="127.0.0.6")[-1])


def test_early_talker_scored_and_served(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A client sending EHLO before the greeting ends gets PREGREET; its EHLO is still answered."""
    sg = start_gate(spamgate_factory, sink, dns_server, ON)
    raw = Raw(sg.port, "127.0.0.5")
    raw.send(b"EHLO bot.sender.test\r\n")
    greeting = raw.reply()
    assert greeting.splitlines()[-1].startswith("220 ")
    assert raw.reply().startswith("250")  # the EHLO sent early
    raw.cmd("QUIT")
    raw.close()
    conn = sg.wait_log("connection", client_ip="127.0.0.5")[-1]
    score, evidence = symbols(conn)["PREGREET"]
    assert score == 6.0
    assert "EHLO bot.sender.test" in evidence


def test_early_talker_rejected_under_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """With PREGREET forced to reject, the early talker is refused; the greeting it interrupted
    ends with the code it began with (RFC 5321 4.2.1: one code per reply), then its commands
    get the 554 with the reference, QUIT excepted."""
    sg = start_gate(
        spamgate_factory, sink, dns_server, ON, site_rules='[symbols.PREGREET]\naction = "reject"\n'
    )
    raw = Raw(sg.port, "127.0.0.5")
    raw.send(b"EHLO bot.sender.test\r\n")
    lines = raw.reply().splitlines()
    assert lines[0].startswith("220-")
    assert all(line.startswith("220") for line in lines), lines
    assert lines[-1].startswith("220 ")
    assert raw.reply().startswith("554 5.7.1 [ref ")  # the answer to the early EHLO
    assert raw.cmd("MAIL FROM:<bot@sender.test>").startswith("554 5.7.1 [ref ")
    assert raw.cmd("QUIT").startswith("221")
    raw.close()
    assert send(sg, "127.0.0.6").get("ok")  # a patient client still passes
    assert len(sink.messages) == 1


def test_exempt_and_passed_clients_greeted_at_once(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """Exempt networks and clients in the pass cache get the one-line greeting without delay."""
    cfg = {"checks": {"pregreet": {"enabled": True, "greet_delay": "400ms", "exempt": ["127.0.0.9/32"]}}}
    sg = start_gate(spamgate_factory, sink, dns_server, cfg)
    for ip, immediate in (("127.0.0.9", True), ("127.0.0.5", False), ("127.0.0.5", True)):
        t0 = time.monotonic()
        raw = Raw(sg.port, ip)
        greeting = raw.reply()
        took = time.monotonic() - t0
        raw.cmd("QUIT")
        raw.close()
        if immediate:
            assert greeting.startswith("220 "), (ip, greeting)
            assert took < 0.3, (ip, took)
        else:
            assert greeting.startswith("220-"), (ip, greeting)
