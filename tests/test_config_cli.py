"""spamgate check-config / show-config, environment overrides and rule files, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.clients import message, smtp
from tests.harness.proc import ROOT, Spamgate, free_port
from tests.harness.sink import Sink


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    penv = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    penv["PYTHONPATH"] = str(ROOT)
    penv.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        env=penv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('[limits]\nmax_recipients = "many"\n', ["limits.max_recipients"]),
        ("[limits]\nmax_recipientz = 5\n", ["limits.max_recipientz", "unknown"]),
        ('[server]\nmode = "maybe"\n', ["server.mode", "enforce"]),
        ('[limits]\nidle_timeout = "5 parsecs"\n', ["limits.idle_timeout"]),
        ('[limits]\nmax_message_size = "lots"\n', ["limits.max_message_size"]),
        ("[nonsense]\nx = 1\n", ["nonsense", "unknown section"]),
        ("[checks.no_such_check]\nenabled = true\n", ["checks.no_such_check"]),
        ('[relay]\ndownstream = "mail.example:99999"\n', ["relay.downstream"]),
        ("[server\n", ["(syntax)"]),
        (
            '[tls]\ncert_file = "/nonexistent/cert.pem"\nkey_file = "/nonexistent/key.pem"\n',
            ["tls.cert_file", "/nonexistent/cert.pem"],
        ),
        ('[policy]\nsite_rules = ["/nonexistent/site.toml"]\n', ["site.toml"]),
    ],
)
def test_check_config_names_the_key(tmp_path: Path, toml: str, fragments: list[str]) -> None:
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(toml)
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0, r.stdout
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)
    assert "Traceback" not in r.stderr


def test_check_config_refuses_bad_site_rules_with_file_and_key(tmp_path: Path) -> None:
    site = tmp_path / "local.toml"
    site.write_text('[thresholds]\nreject = 12\n\n[symbols.HELO_NOT_FQDN]\naction = "explode"\n')
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(f'[policy]\nsite_rules = ["{site}"]\n')
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert "local.toml" in r.stderr
    assert "symbols.HELO_NOT_FQDN.action" in r.stderr
    assert "local.toml:4:" in r.stderr, r.stderr  # the table's line


def test_check_config_reads_list_files(tmp_path: Path) -> None:
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text('[checks.static_lists]\nblock_files = ["/nonexistent/block.txt"]\n')
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert "/nonexistent/block.txt" in r.stderr
    bad = tmp_path / "block.txt"
    bad.write_text("10.0.0.0/8\nnot-a-network\n")
    cfg.write_text(f'[checks.static_lists]\nblock_files = ["{bad}"]\n')
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert "block.txt:2" in r.stderr


def test_check_config_ok_and_yaml_site_rules(tmp_path: Path) -> None:
    site = tmp_path / "local.yaml"
    site.write_text("thresholds:\n  reject: 11\nsymbols:\n  HELO_NOT_FQDN:\n    score: 3.5\n")
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(f'[policy]\nsite_rules = ["{site}"]\n')
    r = cli("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")
    assert "local.yaml" in r.stdout


def test_show_config_defaults_and_effective(tmp_path: Path) -> None:
    r = cli("show-config", "--defaults", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    defaults = tomllib.loads(r.stdout)
    assert defaults["server"]["listen"] == ["127.0.0.1:2525"]
    assert defaults["limits"]["command_line_length"] == 512
    assert defaults["relay"]["downstream"] == ""
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text('[limits]\nmax_recipients = 7\n[server]\nmode = "observe"\n')
    r = cli("show-config", "--config", str(cfg), cwd=tmp_path)
    shown = tomllib.loads(r.stdout)
    assert shown["limits"]["max_recipients"] == 7
    assert shown["server"]["mode"] == "observe"
    assert shown["limits"]["max_errors"] == defaults["limits"]["max_errors"]


def test_env_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "from-env.toml"
    cfg.write_text("[limits]\nmax_recipients = 7\n")
    env = {
        "SPAMGATE_CONFIG": str(cfg),
        "SPAMGATE_LISTEN": "127.0.0.1:2600,[::1]:2600",
        "SPAMGATE_DOWNSTREAM": "10.0.0.5:25",
        "SPAMGATE__LIMITS__MAX_ERRORS": "4",
        "SPAMGATE__SMTP__ADVERTISE_DSN": "true",
        "SPAMGATE__CHECKS__HELO_SYNTAX__MODE": "observe",
    }
    r = cli("show-config", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    shown = tomllib.loads(r.stdout)
    assert shown["limits"]["max_recipients"] == 7  # SPAMGATE_CONFIG was read
    assert shown["server"]["listen"] == ["127.0.0.1:2600", "[::1]:2600"]
    assert shown["relay"]["downstream"] == "10.0.0.5:25"
    assert shown["limits"]["max_errors"] == 4
    assert shown["smtp"]["advertise_dsn"] is True
    assert shown["checks"]["helo_syntax"]["mode"] == "observe"
    bad = cli("check-config", cwd=tmp_path, env={**env, "SPAMGATE__LIMITS__MAX_ERRORS": "none"})
    assert bad.returncode != 0
    assert "limits.max_errors" in bad.stderr


def test_env_overrides_a_running_proxy(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    port = free_port()
    sg = spamgate_factory(
        {"relay": {"downstream": "127.0.0.1:1"}},  # wrong on purpose: the environment wins
        start=False,
    )
    sg.start(env={"SPAMGATE_LISTEN": f"127.0.0.1:{port}", "SPAMGATE_DOWNSTREAM": f"127.0.0.1:{sink.port}"})
    with smtp(port) as c:
        c.ehlo("client.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("env")) == {}
    assert len(sink.messages) == 1
    assert sg.wait_log("started")[0]


def test_run_refuses_what_check_config_refuses(tmp_path: Path) -> None:
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(
        f'[server]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        '[tls]\ncert_file = "/nonexistent/cert.pem"\nkey_file = "/nonexistent/key.pem"\n'
    )
    r = cli("run", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2
    assert "tls.cert_file" in r.stderr
    assert "Traceback" not in r.stderr
