"""From symbols to verdicts: thresholds, forced actions, observe mode, replies (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.checks.base import Stage, Symbol
from proxy.checks.registry import all_symbol_defs
from proxy.policy.engine import Action, Policy
from proxy.policy.rules import RulesError, bundled_rules_dir, load_rules
from proxy.replies import Reply, from_downstream


def _policy(tmp_path: Path, site: str = "", *, observe: bool = False) -> Policy:
    files = sorted(bundled_rules_dir().glob("*.toml"))
    if site:
        f = tmp_path / "site.toml"
        f.write_text(site)
        files.append(f)
    return Policy(load_rules(files, all_symbol_defs()), observe=observe)


def _hits(policy: Policy, *names: str, observe: bool = False, score: float | None = None):  # noqa: ANN202
    return [policy.score(Symbol(n, "ev", score), "test", observe=observe) for n in names]


@pytest.mark.parametrize(
    ("label", "symbols", "scores", "stage", "want", "want_code"),
    [
        ("nothing fired", [], None, Stage.RCPT, Action.ACCEPT, None),
        ("small score accepted", ["HELO_NOT_FQDN"], None, Stage.RCPT, Action.ACCEPT, None),
        ("score reaches tag", ["HELO_INVALID"], 6.0, Stage.DATA, Action.TAG, None),
        ("score reaches reject", ["HELO_INVALID"], 15.0, Stage.RCPT, Action.REJECT, 550),
        ("forced reject at connect answers 554", ["IP_BLOCKLISTED"], None, Stage.CONNECT, Action.REJECT, 554),
        (
            "relay denied forced whatever the score",
            ["RCPT_RELAY_DENIED", "IP_ALLOWLISTED"],
            None,
            Stage.RCPT,
            Action.REJECT,
            554,
        ),
        (
            "allowlist outweighs heuristics",
            ["HELO_INVALID", "IP_ALLOWLISTED"],
            None,
            Stage.RCPT,
            Action.ACCEPT,
            None,
        ),
        ("too many recipients is a 452", ["TOO_MANY_RCPTS"], None, Stage.RCPT, Action.TEMPFAIL, 452),
    ],
)
def test_decide(
    tmp_path: Path,
    label: str,
    symbols: list[str],
    scores: float | None,
    stage: Stage,
    want: Action,
    want_code: int | None,
) -> None:
    p = _policy(tmp_path)
    v = p.decide(_hits(p, *symbols, score=scores), stage)
    assert v.action == want, label
    assert (v.reply.code if v.reply else None) == want_code, label


def test_observe_mode_keeps_relay_control(tmp_path: Path) -> None:
    """Global observe: heuristics only count toward would_be; relay control stays enforced."""
    p = _policy(tmp_path, observe=True)
    v = p.decide(_hits(p, "IP_BLOCKLISTED"), Stage.CONNECT)
    assert (v.action, v.would_be) == (Action.ACCEPT, Action.REJECT)
    v = p.decide(_hits(p, "RCPT_RELAY_DENIED"), Stage.RCPT)
    assert v.action == Action.REJECT


def test_check_in_observe_mode(tmp_path: Path) -> None:
    p = _policy(tmp_path)
    v = p.decide(_hits(p, "IP_BLOCKLISTED", observe=True), Stage.CONNECT)
    assert (v.action, v.would_be) == (Action.ACCEPT, Action.REJECT)
    assert _hits(p, "IP_BLOCKLISTED", observe=True)[0].render() == "~IP_BLOCKLISTED(100){ev}"


def test_site_rules_override_one_key(tmp_path: Path) -> None:
    p = _policy(tmp_path, "[symbols.HELO_NOT_FQDN]\nscore = 20\n[thresholds]\nreject = 12\n")
    assert p.rules.symbols["HELO_NOT_FQDN"].score == 20
    assert p.rules.symbols["HELO_NOT_FQDN"].description  # untouched keys kept
    assert p.rules.reject == 12
    assert p.rules.tag == 6.0
    assert p.decide(_hits(p, "HELO_NOT_FQDN"), Stage.HELO).action == Action.REJECT


@pytest.mark.parametrize(
    ("site", "fragment"),
    [
        ("[symbols.HELO_NOT_FQNDN]\nscore = 1\n", "did you mean HELO_NOT_FQDN"),
        ('[symbols.HELO_NOT_FQDN]\naction = "drop"\n', "symbols.HELO_NOT_FQDN.action"),
        ('[symbols.HELO_NOT_FQDN]\nscore = "high"\n', "expected a number"),
        ('[symbols.RCPT_RELAY_DENIED]\naction = "accept"\n', "always enforced"),
        ('[replies]\nreject = "450 4.7.1 no"\n', "a 5xx reply is needed"),
        ("[thresholds]\nspam = 3\n", "unknown threshold"),
        ("[symbols.HELO_NOT_FQDN\n", "(syntax)"),
    ],
)
def test_invalid_rules_refused_with_file_and_key(tmp_path: Path, site: str, fragment: str) -> None:
    with pytest.raises(RulesError) as exc:
        _policy(tmp_path, site)
    assert "site.toml" in str(exc.value)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("line", "code", "enhanced", "text"),
    [
        ("550 5.7.1 Rejected", 550, "5.7.1", "Rejected"),
        ("451 Try later", 451, "4.0.0", "Try later"),
        ("250 2.0.0 Ok: queued as ABC", 250, "2.0.0", "Ok: queued as ABC"),
    ],
)
def test_reply_parse(line: str, code: int, enhanced: str, text: str) -> None:
    r = Reply.parse(line)
    assert (r.code, r.enhanced, r.text) == (code, enhanced, text)


def test_reply_render_multiline_and_ref() -> None:
    r = Reply(550, "5.7.1", "first\nsecond").with_ref("ab12.3")
    assert r.render() == "550-5.7.1 [ref ab12.3] first\r\n550 5.7.1 second"
    d = from_downstream(550, "5.1.1 <x@y>: Recipient rejected\n5.1.1 User unknown")
    assert d.render() == "550-5.1.1 <x@y>: Recipient rejected\r\n550 5.1.1 User unknown"
    assert from_downstream(250, "Ok").render() == "250 2.0.0 Ok"
