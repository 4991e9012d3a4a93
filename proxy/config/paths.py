"""Where the shipped files are: the rules folder (scores, actions, replies, patterns)."""

from __future__ import annotations

from pathlib import Path


def bundled_rules_dir() -> Path:
    """The shipped rules when ``policy.rules_dir`` is empty: ``rules/`` of the source checkout
    this code runs from (the source of truth; ``make run`` reads it in place), else the copy an
    installed package carries as ``proxy/_rules`` (see setup.py), else the folder a distribution
    package may install, ``/usr/share/spamgate/rules``."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "rules"
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    installed = package / "_rules"
    if installed.is_dir():
        return installed
    return Path("/usr/share/spamgate/rules")
