"""Observe mode, global and per check: mail that would be refused is relayed and the log says
what would have happened; relay control is enforced regardless (never an open relay)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.config.fields import ConfigError
from proxy.config.loader import from_dict
from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

BLOCK = {"block": ["127.0.10.0/24"]}


def run_blocked_client(sg: Spamgate) -> None:
    with smtp(sg.port, "127.0.10.1") as c:
        c.ehlo("client.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("observed")) == {}
        # Relay control stays enforced in observe mode.
        assert c.mail("alice@sender.test")[0] == 250
        code, text = c.rcpt("victim@elsewhere.test")
        assert code == 554
        assert text.startswith(b"5.7.1 [ref ")


@pytest.mark.parametrize(
    "config",
    [
        {"server": {"mode": "observe"}, "checks": {"static_lists": BLOCK}},
        {"checks": {"static_lists": {**BLOCK, "mode": "observe"}}},
    ],
    ids=["global", "per-check"],
)
def test_observe_relays_and_logs_would_be(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], config: dict[str, Any]
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, **config})
    run_blocked_client(sg)
    assert len(sink.messages) == 1
    head = sink.messages[0].data.split(b"\r\n\r\n")[0]
    assert b"X-Spamgate-Symbols: accept (would be reject)" in head
    tx = sg.wait_log("transaction")[0]
    assert tx["outcome"] == "delivered"
    assert tx["would_be"] == "reject"
    # A symbol of a check in observe mode is marked with "~" (scored, not enforced).
    flag = "" if "server" in config else "~"
    assert any(s.startswith(f"{flag}IP_BLOCKLISTED(") for s in tx["symbols"]), tx["symbols"]
    if "server" in config:
        assert tx["mode"] == "observe"
    denied = sg.wait_log("transaction", count=2)[1]
    assert denied["rcpts"][0]["reply"].startswith("554 5.7.1")


def test_enforce_mode_rejects_the_same_client(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "checks": {"static_lists": BLOCK}}
    )
    with Raw(sg.port, "127.0.10.1") as c:
        greeting = c.reply()
        assert greeting.startswith("554 5.7.1 [ref ")
        assert greeting.endswith("Client address blocked by local policy")
        # After a 554 greeting only QUIT is accepted (RFC 5321 3.1).
        assert c.cmd("EHLO client.test") == "503 5.5.1 Connection rejected; only QUIT is accepted"
        assert c.cmd("QUIT").startswith("221")
    assert sink.messages == []
    conn = sg.wait_log("connection")[0]
    assert conn["reply"].startswith("554 5.7.1 [ref ")


def test_relay_control_cannot_be_observed() -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict({"checks": {"relay_control": {"mode": "observe"}}})
    assert "checks.relay_control" in str(exc.value)
