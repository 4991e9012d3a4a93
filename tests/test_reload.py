"""SIGHUP end to end: new rules and list files take effect for new sessions, open sessions stay
up, and a broken rules file or configuration is refused with the old generation left in force."""

from __future__ import annotations

import signal
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.clients import smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

MSG = "Subject: reload\r\n\r\nhello\r\n"


def _send(sg: Spamgate, helo: str = "mail.sender.test", source_ip: str = "127.0.0.1") -> int:
    """One message; returns the first refusal's code, else the final reply code."""
    with smtp(sg.port, source_ip=source_ip) as c:
        for step in (
            lambda: c.ehlo(helo),
            lambda: c.mail("alice@sender.test"),
            lambda: c.rcpt("bob@example.test"),
        ):
            code, _ = step()
            if code >= 400:
                return int(code)
        code, _ = c.data(MSG)
        return int(code)


def _reload(sg: Spamgate, event: str, count: int) -> None:
    sg.signal(signal.SIGHUP)
    sg.wait_log(event, count=count)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return tmp_path / "site.toml"


@pytest.fixture
def gate(sink: Sink, spamgate_factory: Callable[..., Spamgate], site: Path) -> Spamgate:
    site.write_text("")
    return spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "policy": {"site_rules": [str(site)]},
        }
    )


def test_new_rule_applies_to_new_sessions_and_open_session_survives(gate: Spamgate, site: Path) -> None:
    """HELO_NOT_FQDN raised to 20 by a site rule: new sessions with 'nodots' are rejected after
    SIGHUP, while a session opened before the reload keeps going (and keeps its old rules)."""
    assert _send(gate, helo="nodots") == 250
    old = smtp(gate.port)
    old.ehlo("nodots")
    site.write_text("[symbols.HELO_NOT_FQDN]\nscore = 20\n")
    _reload(gate, "reloaded", 1)
    assert _send(gate, helo="nodots") == 550
    assert _send(gate, helo="mail.sender.test") == 250
    # The open session was not dropped and still finishes its mail under its generation.
    old.mail("alice@sender.test")
    old.rcpt("bob@example.test")
    code, _ = old.data(MSG)
    assert code == 250
    old.quit()
    gate.wait_log("connection", count=4)
    rejected = [e for e in gate.events("connection") if e.get("helo_action") == "reject"]
    assert len(rejected) == 1
    assert "HELO_NOT_FQDN(20){nodots}" in rejected[0]["symbols"]


def test_broken_rules_file_is_refused(gate: Spamgate, site: Path) -> None:
    """A rules file with a TOML error: reload refused and logged, the old rules stay."""
    site.write_text("[symbols.HELO_NOT_FQDN]\nscore = 20\n")
    _reload(gate, "reloaded", 1)
    site.write_text("[symbols.HELO_NOT_FQDN\nscore = 1\n")
    _reload(gate, "reload_refused", 1)
    (refused,) = gate.events("reload_refused")
    assert refused["level"] == "error"
    assert str(site) in refused["error"]
    assert _send(gate, helo="nodots") == 550  # still the rules of the last good generation
    assert gate.proc is not None
    assert gate.proc.poll() is None


def test_broken_config_is_refused(gate: Spamgate, site: Path) -> None:
    """A configuration with an invalid key value: refused naming the key, old config in force."""
    cfg = gate.config_path.read_text()
    gate.config_path.write_text(cfg.replace('hostname = "mx.spamgate.test"', "hostname = 42"))
    _reload(gate, "reload_refused", 1)
    (refused,) = gate.events("reload_refused")
    assert "server.hostname" in refused["error"]
    with smtp(gate.port) as c:
        code, msg = c.ehlo("mail.sender.test")
        assert code == 250
        assert msg.startswith(b"mx.spamgate.test")
    assert _send(gate) == 250


def test_list_file_change_is_picked_up(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], tmp_path: Path
) -> None:
    """An address added to a block file takes effect on SIGHUP; others are unaffected."""
    blocked = tmp_path / "block.txt"
    blocked.write_text("# local blocklist\n192.0.2.0/24\n")
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "checks": {"static_lists": {"block_files": [str(blocked)]}},
        }
    )
    assert _send(sg, source_ip="127.0.0.44") == 250
    blocked.write_text("# local blocklist\n192.0.2.0/24\n127.0.0.44\n")
    _reload(sg, "reloaded", 1)
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtp(sg.port, source_ip="127.0.0.44")
    assert info.value.smtp_code == 554
    assert _send(sg, source_ip="127.0.0.45") == 250
    # A block file that became unreadable garbage is refused; the list in force stays.
    blocked.write_text("not-a-network\n")
    _reload(sg, "reload_refused", 1)
    assert "not-a-network" in sg.events("reload_refused")[0]["error"]
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(sg.port, source_ip="127.0.0.44")


def test_reload_with_workers(sink: Sink, spamgate_factory: Callable[..., Spamgate], site: Path) -> None:
    """With two workers, SIGHUP to the supervisor reloads both: every new session sees the rule."""
    site.write_text("")
    sg = spamgate_factory(
        {
            "server": {"workers": 2},
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "policy": {"site_rules": [str(site)]},
        }
    )
    sg.wait_log("started", count=2)
    site.write_text("[symbols.HELO_NOT_FQDN]\nscore = 20\n")
    _reload(sg, "reloaded", 2)  # one line per worker
    # Different source addresses spread the sessions over both workers (SO_REUSEPORT hash).
    codes = {_send(sg, helo="nodots", source_ip=f"127.0.2.{i + 1}") for i in range(12)}
    assert codes == {550}
