"""Log rotation: after logrotate renames ``log.file``, SIGUSR1 (reopen only) or SIGHUP (reopen
and reload) makes every spamgate process, the supervisor and each worker, write its next line
to a new file at the configured path; nothing more goes to the renamed file."""

from __future__ import annotations

import json
import signal
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.proc import Spamgate


def _send(sg: Spamgate, sender: str, count: int = 1) -> None:
    for i in range(count):
        with smtplib.SMTP("127.0.0.1", sg.port, timeout=10) as c:
            c.sendmail(sender, ["bob@example.test"], f"Subject: rotation {i}\r\n\r\nhi\r\n")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.startswith("{")]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGHUP], ids=["SIGUSR1", "SIGHUP"])
def test_log_file_is_reopened_at_its_path_after_rename(
    spamgate_factory: Callable[..., Spamgate], workers: int, signum: signal.Signals
) -> None:
    """Rename the log file as logrotate does, signal the main process: each process logs
    ``log_reopened`` into a new file at the original path (the supervisor and every worker
    when there are several), and mail sent afterwards is logged there, not in the old file."""
    sg = spamgate_factory({"server": {"workers": workers}})
    sg.wait_log("started", count=workers)
    _send(sg, "before@example.test")
    sg.wait_log("transaction", mail_from="before@example.test")

    rotated = sg.log_path.with_name(sg.log_path.name + ".1")
    sg.log_path.rename(rotated)
    assert not sg.log_path.exists()
    sg.signal(signum)

    # Reads the file now at the original path: the new one.
    reopened = sg.wait_log("log_reopened", count=workers + (workers > 1), timeout=10)
    assert {e["slot"] for e in reopened if "slot" in e} == set(range(workers))
    if workers > 1:
        assert [e for e in reopened if e.get("supervisor")], reopened
    if signum == signal.SIGHUP:
        sg.wait_log("reloaded", count=workers)

    _send(sg, "after@example.test", count=3 * workers)
    sg.wait_log("transaction", count=3 * workers, mail_from="after@example.test")
    assert sg.proc is not None
    assert sg.proc.poll() is None, "still running"

    old = _lines(rotated)
    assert [e for e in old if e.get("mail_from") == "before@example.test"]
    assert not [e for e in old if e.get("mail_from") == "after@example.test"]
    assert not [e for e in old if e.get("event") in ("log_reopened", "reloaded")]
    new = _lines(sg.log_path)
    assert not [e for e in new if e.get("mail_from") == "before@example.test"]
    assert sg.stop() == 0
    assert [e for e in _lines(sg.log_path) if e.get("event") == "stopped"]
