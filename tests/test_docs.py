"""The generated reference pages are current, and every key and symbol is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from proxy.app import load_policy_rules
from proxy.checks.registry import all_symbol_defs, by_name
from proxy.config.docs import config_markdown, symbols_markdown
from proxy.config.loader import from_dict
from proxy.config.schema import CORE_SECTIONS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _sections() -> list[tuple[str, type]]:
    out = list(CORE_SECTIONS.items())
    out += [(f"checks.{name}", cls.Options) for name, cls in by_name().items()]
    return out


@pytest.mark.parametrize(("section", "cls"), _sections(), ids=[s for s, _ in _sections()])
def test_every_key_has_a_description(section: str, cls: type) -> None:
    fields = dataclasses.fields(cls)
    assert fields, section
    for f in fields:
        doc = f.metadata.get("doc", "")
        assert doc, f"{section}.{f.name} has no description (declare it with opt(default, 'doc'))"


def test_every_symbol_has_description_and_remedy() -> None:
    for name, sym in all_symbol_defs().items():
        assert re.fullmatch(r"[A-Z0-9_]+", name), name
        assert sym.description, f"{name} has no description"
        if sym.action or sym.score > 0:
            assert sym.remedy, f"{name} can refuse mail but tells no sender how to fix it"


def test_config_md_is_current() -> None:
    assert (DOCS / "CONFIG.md").read_text() == config_markdown(), "docs/CONFIG.md is stale: run make docs"


def test_symbols_md_is_current() -> None:
    expected = symbols_markdown(load_policy_rules(from_dict({})))
    assert (DOCS / "SYMBOLS.md").read_text() == expected, "docs/SYMBOLS.md is stale: run make docs"


def test_config_md_lists_every_key() -> None:
    text = (DOCS / "CONFIG.md").read_text()
    for section, cls in _sections():
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text, f"{section}.{f.name} missing from docs/CONFIG.md"
