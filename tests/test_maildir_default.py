"""`make run`'s embedded default end to end: no config file at all, swaks in, Maildir out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.clients import swaks
from tests.harness.proc import ROOT, free_port, wait_port


def test_no_config_delivers_to_local_maildir(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    env["PYTHONPATH"] = str(ROOT)
    out = open(tmp_path / "stdout.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port("127.0.0.1", port, timeout=15)
        # swaks's default sender (user@<hostname>) has no DNS here: SENDER_DOMAIN_NX would defer it.
        r = swaks(port, "--to", "user@example.test", "--from", "me@example.test", "--body", "maildir body")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "250 2.0.0" in r.stdout
        denied = swaks(port, "--to", "someone@elsewhere.test", "--from", "me@example.test")
        assert denied.returncode != 0
        assert "554 5.7.1" in denied.stdout, denied.stdout
        deadline = time.monotonic() + 5
        box = tmp_path / "var" / "mail" / "user@example.test" / "new"
        while not (box.is_dir() and any(box.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = list(box.iterdir())
        assert len(files) == 1
        data = files[0].read_bytes()
        assert b"maildir body" in data
        assert data.startswith(b"Received: from ")
        assert not (tmp_path / "var" / "mail" / "someone@elsewhere.test").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        out.close()
    log = (tmp_path / "stdout.log").read_text()
    assert '"event":"transaction"' in log.replace(" ", "")
