"""ARF abuse reports end to end: a trap hit and a message rejected at DATA are reported to the
abuse address through a relay (the sink), deduplicated per IP and reason, rate-limited."""

from __future__ import annotations

import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate, deep_merge
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


def sg_with_reports(factory: Factory, sink: Sink, tmp_path: Path, **over: Any) -> Spamgate:
    rules = tmp_path / "site.toml"
    rules.write_text('[symbols.HDR_DATE_MISSING]\naction = "reject"\n')
    cfg = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "policy": {"site_rules": [str(rules)]},
        "checks": {
            "spamtrap": {"enabled": True, "addresses": ["trap@example.test"], "exempt_networks": []},
            "penalty_box": {"enabled": False},
            "abuse_report": {
                "enabled": True,
                "to": "abuse@peer.test",
                "relay": f"127.0.0.1:{sink.port}",
                "sender": "reports@mx.spamgate.test",
                "max_per_hour": 2,
            },
        },
    }
    return factory(deep_merge(cfg, over))


def session(sg: Spamgate, src: str, rcpt: str, data: bytes | None = None) -> str:
    c = Raw(sg.port, source_ip=src)
    c.reply()
    c.cmd("EHLO spammer.test")
    c.cmd("MAIL FROM:<bulk@spammer.test>")
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    if data is not None:
        c.cmd("DATA")
        r = c.cmd(data + b"\r\n.")
    c.cmd("QUIT")
    c.close()
    return r


def reports(sink: Sink) -> list[Any]:
    return [
        message_from_bytes(m.data, policy=policy.default)
        for m in sink.messages
        if m.rcpts == ["abuse@peer.test"]
    ]


def wait_reports(sink: Sink, n: int) -> list[Any]:
    deadline = time.monotonic() + 8
    while len(reports(sink)) < n:
        assert time.monotonic() < deadline, f"{len(reports(sink))} reports, wanted {n}"
        time.sleep(0.1)
    return reports(sink)


def test_trap_hit_and_rejected_spam_reported_deduplicated_and_rate_limited(
    sink: Sink, spamgate_factory: Factory, tmp_path: Path
) -> None:
    sg = sg_with_reports(spamgate_factory, sink, tmp_path)
    assert session(sg, "127.0.0.30", "trap@example.test").startswith("550 5.1.1")
    (arf,) = wait_reports(sink, 1)
    assert arf.get_content_type() == "multipart/report"
    assert arf.get_param("report-type") == "feedback-report"
    human, report, headers = arf.get_payload()
    assert human.get_content_type() == "text/plain"
    assert report.get_content_type() == "message/feedback-report"
    fields = report.get_payload() if isinstance(report.get_payload(), str) else str(report.get_payload()[0])
    assert "Feedback-Type: abuse" in fields
    assert "Source-IP: 127.0.0.30" in fields
    assert "Original-Mail-From: <bulk@spammer.test>" in fields
    assert "Original-Rcpt-To: <trap@example.test>" in fields
    assert "Reporting-MTA: dns; mx.spamgate.test" in fields
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Received: from spammer.test ([127.0.0.30])" in headers.get_content()

    # The same IP and reason again: deduplicated.
    session(sg, "127.0.0.30", "trap@example.test")
    time.sleep(0.5)
    assert len(reports(sink)) == 1

    # Spam rejected at DATA: reported with the message's own header.
    spam = b"From: <bulk@spammer.test>\r\nTo: <u@example.test>\r\nSubject: cheap pills\r\n\r\nbuy\r\n"
    assert session(sg, "127.0.0.31", "u@example.test", spam).startswith("5")
    arfs = wait_reports(sink, 2)
    assert "Subject: cheap pills" in arfs[1].get_payload()[2].get_content()
    assert "abuse_report_sent" in {e["event"] for e in sg.lines()}

    # The third report within the hour is over max_per_hour = 2.
    session(sg, "127.0.0.32", "trap@example.test")
    sg.wait_log("abuse_report_rate_limited")
    assert len(reports(sink)) == 2
