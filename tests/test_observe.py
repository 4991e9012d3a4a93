"""Observe mode: verdicts are computed and logged (``would_be``) but mail is relayed.

Relay control and protocol limits are enforced in every mode: never an open relay.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

BLOCKED = "127.0.6.6"


def _config(sink: Sink, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "checks": {"static_lists": {"block": [f"{BLOCKED}/32"]}},
    }
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v) if k != "checks" else cfg["checks"]["static_lists"].update(v)
    return cfg


def test_enforce_rejects_blocked_client(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(_config(sink))
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtp(sg.port, BLOCKED)
    assert e.value.smtp_code == 554
    assert sink.messages == []
    conn = sg.wait_log("connection")[0]
    assert conn["reply"].startswith("554 5.7.1")


@pytest.mark.parametrize("how", ["global", "check"])
def test_observe_relays_and_logs_would_be(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], how: str
) -> None:
    if how == "global":
        cfg = _config(sink, server={"mode": "observe"})
    else:
        cfg = _config(sink, checks={"mode": "observe"})
    sg = spamgate_factory(cfg)
    with smtp(sg.port, BLOCKED) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("obs")) == {}
        # Relay control is still enforced.
        code, text = c.mail("alice@sender.test")
        assert code == 250
        code, text = c.rcpt("victim@elsewhere.test")
        assert code == 554
        assert text.startswith(b"5.7.1 [ref ")
        assert b"Relay access denied" in text
    assert len(sink.messages) == 1
    assert b"would be reject" in sink.messages[0].data
    tx = sg.wait_log("transaction", outcome="delivered")[0]
    assert tx["would_be"] == "reject"
    assert tx["action"] != "reject"
    assert any(s.startswith("~IP_BLOCKLISTED") or "IP_BLOCKLISTED" in s for s in tx["symbols"])
    if how == "global":
        assert tx["mode"] == "observe"
    refused = sg.wait_log("transaction", count=2)[1]
    assert refused["rcpts"][0]["reply"].startswith("554 5.7.1")
    assert all(m.rcpts == ["bob@example.test"] for m in sink.messages)


def test_relay_control_cannot_be_observed(spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"checks": {"relay_control": {"mode": "observe"}}}, start=False)
    with pytest.raises(RuntimeError, match="checks.relay_control"):
        sg.start()
