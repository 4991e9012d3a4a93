"""The wheel is complete: built from the source, installed into a fresh virtualenv (not
editable, nothing from this checkout on the path), spamgate validates its default configuration
and serves mail from a directory outside the checkout, reading the rules the wheel carries."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness.proc import ROOT, free_port, wait_port

# What a source distribution holds: the build needs nothing else from the checkout.
SOURCE = ("pyproject.toml", "setup.py", "README.md", "proxy", "rules")


def _env() -> dict[str, str]:
    """The caller's environment without anything that points into this checkout or configures
    spamgate (PYTHONPATH, SPAMGATE_*, a virtualenv)."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SPAMGATE")}


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, f"{argv}: {r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_carries_the_rules_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    """``pip wheel`` of the source puts rules/ (and rules/patterns) into the wheel; installed
    with its dependencies into a new virtualenv, ``spamgate check-config`` passes with no
    ``policy.rules_dir`` and names the installed rules, and ``spamgate run`` started from an
    unrelated directory accepts a message (250) into its Maildir."""
    src = tmp_path / "src"
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()

    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], tmp_path, 120)
    (wheel,) = dist.glob("spamgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rule in sorted((ROOT / "rules").rglob("*")):
        if rule.is_file():
            assert f"proxy/_rules/{rule.relative_to(ROOT / 'rules').as_posix()}" in names, sorted(names)
    # The console's script and style travel as package data (no asset is loaded from outside).
    for asset in sorted((ROOT / "proxy" / "console" / "static").iterdir()):
        assert f"proxy/console/static/{asset.name}" in names, sorted(names)

    # A virtualenv without a pip of its own (ensurepip costs seconds): this pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, 60)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    _run([*pip, "install", "-q", "--find-links", str(dist), "spamgate"], tmp_path, 180)
    spamgate = str(venv / "bin" / "spamgate")
    where = _run([str(venv / "bin" / "python"), "-c", "import proxy; print(proxy.__file__)"], elsewhere, 30)
    assert where.stdout.startswith(str(venv)), where.stdout

    check = _run([spamgate, "check-config"], elsewhere, 60)
    installed_rules = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert f"rules: {installed_rules / 'proxy' / '_rules' / '00-defaults.toml'}" in check.stdout, check.stdout
    assert str(ROOT) not in check.stdout

    port = free_port()
    env = _env() | {"SPAMGATE__DNS__NAMESERVERS": '["127.0.0.1:1"]', "SPAMGATE__DNS__TIMEOUT": "200ms"}
    with open(tmp_path / "run.log", "wb") as out:
        proc = subprocess.Popen(
            [spamgate, "run", "--listen", f"127.0.0.1:{port}"],
            cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        try:
            wait_port("127.0.0.1", port, timeout=20)
        except TimeoutError:
            raise AssertionError((tmp_path / "run.log").read_text()) from None
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("client.example.test")
            c.mail("alice@example.test")
            c.rcpt("bob@example.test")
            code, reply = c.data(b"Subject: from the wheel\r\n\r\nhi\r\n")
        assert code == 250, reply
    finally:
        proc.terminate()
        proc.wait(20)
    (delivered,) = (elsewhere / "var" / "mail" / "bob@example.test" / "new").iterdir()
    assert b"from the wheel" in delivered.read_bytes()
