"""The README's quick start works exactly as written: its first swaks command, run against
``spamgate run`` started as ``make run`` starts it (no config, no arguments, the embedded
defaults), gets 250 and the message is where the README's ``ls`` line looks, whatever DNS the
machine has: none at all, an offline resolver answering NXDOMAIN, or the Internet's answers."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.harness.isolated import run_isolated
from tests.harness.proc import ROOT


def _quick_start_commands() -> list[list[str]]:
    """The shell lines of the README's "Quick start" section, in order, comments removed."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", text, re.M | re.S)
    assert section is not None, "README.md has no '## Quick start' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S)
    return [
        shlex.split(line, comments=True) for block in blocks for line in block.splitlines() if line.strip()
    ]


def test_quick_start_section_has_a_swaks_and_an_ls_line() -> None:
    """The quick start sends with swaks to the address ``make run`` listens on, then lists the
    Maildir the message went to."""
    commands = _quick_start_commands()
    (make_run,) = [c for c in commands if c[:2] == ["make", "run"]]
    swaks = next(c for c in commands if c[0] == "swaks")
    assert swaks[swaks.index("--server") + 1] == "127.0.0.1:2525"
    assert any(c[0] == "ls" for c in commands)
    assert make_run == ["make", "run"]
    # How the next test starts spamgate: what `make run` runs.
    recipe = re.search(r"^run: .*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    # (PYCACHE sets only the byte-code cache variables: the same program with the same arguments.)
    assert recipe.group(1) == "$(PYCACHE) $(VENV)/bin/spamgate run $(ARGS)"


@pytest.mark.parametrize("world", ["none", "nxdomain", "internet"])
def test_readme_swaks_command_is_delivered(tmp_path: Path, world: str) -> None:
    """The README's first swaks command line, verbatim, gets 250 to its message from
    ``spamgate run`` with the embedded defaults (as ``make run``: the venv's ``spamgate run``,
    no SPAMGATE_* variables), in a network namespace where DNS is the given world; the
    message lands in the Maildir the README's ``ls`` line names."""
    commands = _quick_start_commands()
    swaks = next(c for c in commands if c[0] == "swaks")
    (ls,) = [c for c in commands if c[0] == "ls"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    # `make run` is `$(PYCACHE) $(VENV)/bin/spamgate run $(ARGS)` in the checkout; here the checkout's
    # venv, with tmp_path as the working directory, so var/ is written there and not in ROOT.
    spamgate = str(Path(sys.executable).parent / "spamgate")
    result = run_isolated(
        world, [spamgate, "run"], swaks, cwd=tmp_path, env=env, wait_for=swaks[swaks.index("--server") + 1]
    )
    out = result["client_out"]
    replies = re.findall(r"^<[-~*]+ +(\d{3}[ -].*)$", out, re.M)
    assert result["client_rc"] == 0, out + result["server_log"][-3000:]
    assert any(r.startswith("250 2.0.0") for r in replies), out
    assert not [r for r in replies if r[0] in "45"], out
    folder = ls[-1].rstrip("/") + "/"
    assert [f for f in result["files"] if f.startswith(folder)], (folder, result["files"])
