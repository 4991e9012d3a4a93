"""``spamgate check-config`` / ``show-config``, environment overrides, rules files."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import ROOT, Spamgate
from tests.harness.sink import Sink


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    penv = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    penv["PYTHONPATH"] = str(ROOT)
    penv.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        check=False,
        cwd=cwd,
        env=penv,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[limits]\nmax_errors = 'x'\n", "limits.max_errors: expected an integer"),
        ("[limits]\nbogus = 1\n", "limits.bogus"),
        ("[nosuch]\nx = 1\n", "nosuch: unknown section"),
        ("[server]\nmode = 'loud'\n", "server.mode"),
        ("[limits]\nidle_timeout = '5 fortnights'\n", "limits.idle_timeout"),
        ("[relay]\ndownstream = 'host:notaport'\n", "relay.downstream"),
        ("[checks.nosuch]\nenabled = true\n", "checks.nosuch: unknown check"),
        ("[checks.static_lists]\nblock_files = ['/nonexistent/list']\n", "checks.static_lists"),
        ("[tls]\ncert_file = '/nonexistent/cert.pem'\n", "tls.cert_file"),
        ("[checks.relay_control]\nmode = 'observe'\n", "checks.relay_control"),
        ("[server\n", "(syntax)"),
    ],
)
def test_check_config_errors_name_the_key(tmp_path: Path, toml: str, fragment: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert fragment in r.stderr, r.stderr
    assert str(cfg) in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_ok(tmp_path: Path) -> None:
    r = cli("check-config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: (defaults)")


def test_invalid_rules_refused_with_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "site.toml"
    rules.write_text("[thresholds]\nreject = 5\n\n[symbols.NO_SUCH_SYMBOL]\nscore = 1\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[policy]\nsite_rules = ['{rules}']\n")
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert f"{rules}:4" in r.stderr
    assert "symbols.NO_SUCH_SYMBOL" in r.stderr


def test_show_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[limits]\nmax_recipients = 7\n")
    shown = tomllib.loads(cli("show-config", "--config", str(cfg), cwd=tmp_path).stdout)
    assert shown["limits"]["max_recipients"] == 7
    assert shown["limits"]["command_line_length"] == 512
    defaults = tomllib.loads(cli("show-config", "--defaults", cwd=tmp_path).stdout)
    assert defaults["limits"]["max_recipients"] == 100
    assert defaults["server"]["listen"] == ["127.0.0.1:2525"]
    assert "checks" in defaults
    # The output is itself a valid configuration.
    again = tmp_path / "again.toml"
    again.write_text(cli("show-config", "--defaults", cwd=tmp_path).stdout)
    assert cli("check-config", "--config", str(again), cwd=tmp_path).returncode == 0


def test_env_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[limits]\nmax_recipients = 7\n[relay]\ndownstream = '10.0.0.1:25'\n")
    env = {
        "SPAMGATE_CONFIG": str(cfg),
        "SPAMGATE_LISTEN": "127.0.0.1:2600,[::1]:2600",
        "SPAMGATE_DOWNSTREAM": "127.0.0.1:2700",
        "SPAMGATE__LIMITS__MAX_ERRORS": "3",
        "SPAMGATE__CHECKS__HELO_SYNTAX__MODE": "observe",
    }
    r = cli("show-config", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    shown = tomllib.loads(r.stdout)
    assert shown["limits"]["max_recipients"] == 7  # from SPAMGATE_CONFIG
    assert shown["server"]["listen"] == ["127.0.0.1:2600", "[::1]:2600"]
    assert shown["relay"]["downstream"] == "127.0.0.1:2700"
    assert shown["limits"]["max_errors"] == 3
    assert shown["checks"]["helo_syntax"]["mode"] == "observe"
    bad = cli("check-config", cwd=tmp_path, env={**env, "SPAMGATE__LIMITS__MAX_ERRORS": "lots"})
    assert bad.returncode != 0
    assert "limits.max_errors" in bad.stderr


def test_env_downstream_end_to_end(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(env={"SPAMGATE_DOWNSTREAM": f"127.0.0.1:{sink.port}"})
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("env")) == {}
    assert len(sink.messages) == 1


def test_yaml_site_rules_end_to_end(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], tmp_path: Path
) -> None:
    """A YAML site file overrides one key of the shipped rules: a blocklisted client is tagged."""
    site = tmp_path / "site.yaml"
    site.write_text("symbols:\n  IP_BLOCKLISTED:\n    action: tag\n    score: 7\n")
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "policy": {"site_rules": [str(site)]},
            "checks": {"static_lists": {"block": ["127.0.9.1/32"]}},
        }
    )
    with smtp(sg.port, "127.0.9.1") as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("yaml")) == {}
    assert b"X-Spam-Flag: YES" in sink.messages[0].data
    assert sg.wait_log("transaction")[0]["action"] == "tag"
