"""The admin listener: /metrics counters move with the right labels, /healthz, /readyz, workers."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable

import pytest

from tests.harness.admin import get, sample, wait_sample
from tests.harness.clients import smtp
from tests.harness.dns_server import DnsTestServer
from tests.harness.proc import Spamgate, free_port
from tests.harness.sink import Sink

MSG = (
    "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: hi\r\n"
    "Date: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <m@sender.test>\r\n\r\n"
) + ("x" * 70 + "\r\n") * 70


def _admin(sink: Sink, factory: Callable[..., Spamgate], **extra: object) -> tuple[Spamgate, int]:
    port = free_port()
    cfg: dict[str, object] = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "metrics": {"listen": f"127.0.0.1:{port}", "readyz_cache": "0s", "readyz_timeout": "1s"},
        "checks": {"static_lists": {"block": ["127.0.0.66/32"]}},
    }
    cfg.update(extra)
    sg = factory(cfg)
    sg.wait_log("admin_listening")
    return sg, port


def test_metrics_count_transactions_symbols_and_connections(sink: Sink, spamgate_factory) -> None:
    """A delivered mail, a relay-denied recipient and a blocklisted client each move their series."""
    sg, port = _admin(sink, spamgate_factory)
    with smtp(sg.port) as c:
        c.ehlo("mail.sender.test")
        c.sendmail("a@sender.test", ["bob@example.test"], MSG)
    with smtp(sg.port, source_ip="127.0.0.5") as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        code, _ = c.rcpt("victim@elsewhere.test")
        assert code == 554
        c.rset()
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtp(sg.port, source_ip="127.0.0.66")
    assert info.value.smtp_code == 554
    body = wait_sample(port, "spamgate_connections_total", 3)
    assert sample(body, "spamgate_transactions_total", outcome="delivered", action="accept") == 1
    assert sample(body, "spamgate_transactions_total", outcome="aborted") == 1
    assert sample(body, "spamgate_symbol_hits_total", symbol="RCPT_RELAY_DENIED") == 1
    assert sample(body, "spamgate_symbol_hits_total", symbol="IP_BLOCKLISTED") == 1
    assert sample(body, "spamgate_actions_total", stage="rcpt", action="reject") == 1
    assert sample(body, "spamgate_actions_total", stage="connect", action="reject") == 1
    assert sample(body, "spamgate_actions_total", stage="data", action="accept") == 1
    assert sample(body, "spamgate_connections_total", closed="quit") >= 2
    assert sample(body, "spamgate_connections_total", closed="connect_reject") == 1
    assert sample(body, "spamgate_message_size_bytes_count") == 1
    assert sample(body, "spamgate_message_size_bytes_bucket", le="4096.0") == 0
    assert sample(body, "spamgate_message_size_bytes_bucket", le="16384.0") == 1
    assert sample(body, "spamgate_downstream_seconds_count", phase="data") == 1
    assert sample(body, "spamgate_downstream_seconds_count", phase="mail") == 2
    assert sample(body, "process_resident_memory_bytes") > 0
    # The loop watcher runs every 0.5 s.
    body = wait_sample(port, "spamgate_event_loop_lag_seconds_count", 1, timeout=3)
    assert sample(body, "spamgate_event_loop_lag_seconds_count") >= 1


def test_downstream_errors_counted(sink: Sink, spamgate_factory) -> None:
    """A downstream that is down: the client gets 451 and the error is counted by kind."""
    sg, port = _admin(sink, spamgate_factory)
    sink.stop()
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        code, _ = c.mail("a@sender.test")
        assert code == 451
    body = wait_sample(port, "spamgate_downstream_errors_total", 1)
    assert sample(body, "spamgate_downstream_errors_total", kind="unavailable") == 1
    assert sample(body, "spamgate_transactions_total", outcome="deferred") == 1


def test_healthz_and_readyz_follow_the_downstream(sink: Sink, spamgate_factory) -> None:
    """/healthz is 200 while alive; /readyz is 200 with the sink up, 503 naming it when down."""
    _sg, port = _admin(sink, spamgate_factory)
    assert get(port, "/healthz") == (200, "ok\n")
    status, body = get(port, "/readyz")
    assert (status, body) == (200, "downstream ok\n")
    sink.stop()
    status, body = get(port, "/readyz")
    assert status == 503
    assert "downstream failed" in body
    sink.start()
    deadline = time.monotonic() + 5
    while get(port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.1)
    assert get(port, "/nope")[0] == 404


def test_workers_aggregate(sink: Sink, spamgate_factory) -> None:
    """With two workers, /metrics (served by worker 0) counts the mail of both."""
    sg, port = _admin(sink, spamgate_factory, server={"workers": 2})
    sg.wait_log("admin_listening")
    n = 24
    for i in range(n):
        with smtp(sg.port, source_ip=f"127.0.1.{i + 1}") as c:
            c.ehlo("mail.sender.test")
            c.sendmail("a@sender.test", ["bob@example.test"], MSG)
    body = wait_sample(port, "spamgate_transactions_total", n)
    assert sample(body, "spamgate_transactions_total", outcome="delivered") == n
    starts = {e["pid"] for e in sg.events("started")}
    assert len(starts) == 2
    assert len(sink.state.messages) == n


def test_admin_port_in_use_does_not_stop_mail(sink: Sink, spamgate_factory) -> None:
    """The admin port is taken: an error is logged and SMTP is served without it (no crash loop)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sg = spamgate_factory(
            {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "metrics": {"listen": f"127.0.0.1:{port}"}}
        )
        (err,) = sg.wait_log("admin_listen_failed")
        assert err["level"] == "error"
        with smtp(sg.port) as c:
            c.ehlo("mail.sender.test")
            c.sendmail("a@sender.test", ["bob@example.test"], MSG)
        assert len(sink.state.messages) == 1
        assert sg.events("worker_died") == []


def test_dns_metrics(sink: Sink, spamgate_factory, dns_server: DnsTestServer) -> None:
    """Queries through the resolver are counted by type and outcome, with latency; a repeated
    lookup is a cache hit; a probed DNS list reports its health."""
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("mail.sender.test", "A", "127.0.0.1")
    dns_server.add("sender.test", "MX", "10 mail.sender.test.")
    port = free_port()
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "dns": {"nameservers": [dns_server.address], "timeout": "300ms", "retries": 0},
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "checks": {"dnsbl": {"zones": ["bl.test*3"]}},
        }
    )
    sg.wait_log("admin_listening")
    for _ in range(2):
        with smtp(sg.port, source_ip="127.0.0.3") as c:
            c.ehlo("mail.sender.test")
            c.sendmail("a@sender.test", ["bob@example.test"], MSG)
    body = wait_sample(port, "spamgate_list_healthy", 1, zone="bl.test")
    assert sample(body, "spamgate_list_healthy", zone="bl.test") == 1
    assert sample(body, "spamgate_dns_queries_total", qtype="A", outcome="ok") >= 1  # the probe
    assert sample(body, "spamgate_dns_queries_total", qtype="PTR") >= 1  # rDNS of 127.0.0.3
    assert sample(body, "spamgate_dns_queries_total", outcome="nxdomain") >= 1
    assert sample(body, "spamgate_dns_queries_total", outcome="cache_hit") >= 1  # second session
    assert sample(body, "spamgate_dns_query_seconds_count") >= 2
