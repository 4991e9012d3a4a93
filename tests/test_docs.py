"""The generated reference pages are current and every key and symbol is described."""

from __future__ import annotations

from proxy.app import load_policy_rules
from proxy.checks.registry import all_symbol_defs
from proxy.config.docs import config_markdown, missing_docs, symbols_markdown
from proxy.config.loader import from_dict
from tests.harness.proc import ROOT


def test_every_key_has_a_description() -> None:
    assert missing_docs() == []


def test_every_symbol_has_description_and_remedy() -> None:
    for sym in all_symbol_defs().values():
        assert sym.description, sym.name
        assert sym.remedy, sym.name


def test_config_md_is_current() -> None:
    committed = (ROOT / "docs" / "CONFIG.md").read_text()
    assert committed == config_markdown(), "docs/CONFIG.md is stale: run `make docs`"


def test_symbols_md_is_current() -> None:
    committed = (ROOT / "docs" / "SYMBOLS.md").read_text()
    expected = symbols_markdown(load_policy_rules(from_dict({})))
    assert committed == expected, "docs/SYMBOLS.md is stale: run `make docs`"


def test_own_docs_exist_and_link_the_reference() -> None:
    for name in ("RELAY.md", "HARDENING.md"):
        text = (ROOT / "docs" / name).read_text()
        assert "CONFIG.md" in text, name
