"""``make run``'s embedded default: no config file, local Maildir delivery, no open relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.clients import swaks
from tests.harness.proc import ROOT, free_port, wait_port


@pytest.fixture
def default_run(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port("127.0.0.1", port)
        yield port, tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        assert b'"event":"stopped"' in out


def test_embedded_default_delivers_to_maildir(default_run: tuple[int, Path]) -> None:
    port, cwd = default_run
    r = swaks(port, "--to", "user@example.test", "--from", "alice@sender.test", "--header", "Subject: hi")
    assert r.returncode == 0, r.stdout + r.stderr
    box = cwd / "var" / "mail" / "user@example.test"
    files = list((box / "new").iterdir())
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"Subject: hi" in data
    assert data.startswith(b"Received: from ")
    assert list((box / "tmp").iterdir()) == []


def test_embedded_default_is_not_an_open_relay(default_run: tuple[int, Path]) -> None:
    port, cwd = default_run
    r = swaks(port, "--to", "user@elsewhere.test", "--from", "alice@sender.test")
    assert r.returncode != 0
    assert "554 5.7.1 [ref " in r.stdout
    assert not (cwd / "var" / "mail" / "user@elsewhere.test").exists()
