"""The declarative policy in ``rules/``: symbol scores, thresholds, forced actions, reply texts.

Files (TOML or YAML) are read in name order from the rules folder, then the site files; a
later file overrides an earlier one key by key (a site file can change one symbol's score and
nothing else). Every symbol named must be one some check declares; a typo is refused with the
file, line, key and the reason, and the previous rules stay in force on reload.

Format::

    [thresholds]          # score -> action; 0 disables a threshold
    tag = 6.0
    tempfail = 0
    reject = 15.0

    [replies]             # replies for threshold actions; *_connect ones answer the greeting
    reject = "550 5.7.1 Message rejected as spam"
    tempfail = "451 4.7.1 Message deferred, try again later"
    reject_connect = "554 5.7.1 Service unavailable; client host rejected"
    tempfail_connect = "421 4.7.0 Service temporarily unavailable, try again later"

    [symbols.HELO_BARE_IP]
    score = 1.5
    action = "reject"     # optional: forced whenever the symbol fires ("tempfail", "reject", "")
    reply = "550 5.7.1 Bare IP address in HELO"   # optional reply for the forced action
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proxy.config.paths import bundled_rules_dir
from proxy.model import Action, Reply, Stage, SymbolDef

__all__ = ["Rules", "RulesError", "SymbolRule", "bundled_rules_dir", "load_rules", "read_rule_file"]

ACTIONS = ("", "accept", "tag", "tempfail", "reject")
REPLY_KEYS = ("reject", "tempfail", "reject_connect", "tempfail_connect")
SYMBOL_KEYS = ("score", "action", "reply", "description")


class RulesError(ValueError):
    def __init__(self, source: str, key: str, reason: str, line: int = 0) -> None:
        self.source, self.key, self.reason, self.line = source, key, reason, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {reason}")


@dataclass(frozen=True, slots=True)
class SymbolRule:
    name: str
    score: float
    description: str
    action: str = ""
    reply: Reply | None = None
    always_enforced: bool = False
    remedy: str = ""


@dataclass(frozen=True, slots=True)
class Rules:
    symbols: dict[str, SymbolRule]
    tag: float = 6.0
    tempfail: float = 0.0
    reject: float = 15.0
    replies: dict[str, Reply] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def threshold_action(self, score: float) -> Action:

        if self.reject and score >= self.reject:
            return Action.REJECT
        if self.tempfail and score >= self.tempfail:
            return Action.TEMPFAIL
        if self.tag and score >= self.tag:
            return Action.TAG
        return Action.ACCEPT

    def reply_for(self, action: Action, stage: Stage) -> Reply:
        key = action.label + ("_connect" if stage == 0 else "")
        return self.replies.get(key) or self.replies[action.label]


DEFAULT_REPLIES = {
    "reject": "550 5.7.1 Message rejected as spam",
    "tempfail": "451 4.7.1 Message deferred, try again later",
    "reject_connect": "554 5.7.1 Service unavailable; client host rejected",
    "tempfail_connect": "421 4.7.0 Service temporarily unavailable, try again later",
}


def read_rule_file(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # only for YAML rule files: the bundled ones are TOML

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
            raise RulesError(str(path), "(syntax)", str(exc).splitlines()[0], line) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(str(path), "(syntax)", str(exc)) from None
    if not isinstance(data, dict):
        raise RulesError(str(path), "(top)", "expected a table/mapping")
    return data, text


def _line_of(text: str, *keys: str) -> int:
    """Best-effort line of a key in a TOML/YAML text, for error messages."""
    lines = text.splitlines()
    for key in reversed(keys):
        for i, line in enumerate(lines, 1):
            s = line.strip()
            if s.startswith(("[", "#")) and key not in s:
                continue
            if s.startswith((f"[symbols.{key}]", f"{key} ", f"{key}=", f"{key}:")):
                return i
            if s.startswith("[") and s.rstrip("]").endswith(f".{key}"):
                return i
    return 0


def load_rules(
    files: Iterable[Path],
    defs: dict[str, SymbolDef],
) -> Rules:
    """Load and merge rule files over the symbols' built-in defaults."""
    symbols = {
        d.name: SymbolRule(
            d.name,
            d.score,
            d.description,
            d.action,
            Reply.parse(d.reply) if d.reply else None,
            d.always_enforced,
            d.remedy,
        )
        for d in defs.values()
    }
    thresholds: dict[str, float] = {"tag": 6.0, "tempfail": 0.0, "reject": 15.0}
    replies = {k: Reply.parse(v) for k, v in DEFAULT_REPLIES.items()}
    sources = []
    for path in files:
        data, text = read_rule_file(path)
        src = str(path)
        sources.append(src)
        for top, value in data.items():
            if top == "thresholds":
                _apply_thresholds(value, thresholds, src, text)
            elif top == "replies":
                _apply_replies(value, replies, src, text)
            elif top == "symbols":
                _apply_symbols(value, symbols, src, text)
            else:
                raise RulesError(
                    src,
                    top,
                    "unknown section (known: thresholds, replies, symbols)",
                    _line_of(text, top),
                )
    return Rules(
        symbols,
        thresholds["tag"],
        thresholds["tempfail"],
        thresholds["reject"],
        replies,
        tuple(sources),
    )


def _number(value: Any, src: str, key: str, text: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(
            src, key, f"expected a number, got {value!r}", _line_of(text, key.rsplit(".", maxsplit=1)[-1])
        )
    return float(value)


def _apply_thresholds(value: Any, out: dict[str, float], src: str, text: str) -> None:
    if not isinstance(value, dict):
        raise RulesError(src, "thresholds", "expected a table", _line_of(text, "thresholds"))
    for k, v in value.items():
        if k not in out:
            raise RulesError(
                src,
                f"thresholds.{k}",
                "unknown threshold (known: tag, tempfail, reject)",
                _line_of(text, k),
            )
        out[k] = _number(v, src, f"thresholds.{k}", text)


def _apply_replies(value: Any, out: dict[str, Reply], src: str, text: str) -> None:
    if not isinstance(value, dict):
        raise RulesError(src, "replies", "expected a table", _line_of(text, "replies"))
    for k, v in value.items():
        if k not in REPLY_KEYS:
            raise RulesError(
                src,
                f"replies.{k}",
                f"unknown reply (known: {', '.join(REPLY_KEYS)})",
                _line_of(text, k),
            )
        out[k] = _parse_reply(v, src, f"replies.{k}", text, want="5" if k.startswith("reject") else "4")


def _parse_reply(v: Any, src: str, key: str, text: str, want: str = "") -> Reply:
    try:
        reply = Reply.parse(str(v))
    except ValueError as exc:
        raise RulesError(src, key, str(exc), _line_of(text, key.rsplit(".", maxsplit=1)[-1])) from None
    if want and str(reply.code)[0] != want:
        raise RulesError(
            src,
            key,
            f"a {want}xx reply is needed here, got {reply.code}",
            _line_of(text, key.rsplit(".", maxsplit=1)[-1]),
        )
    return reply


def _apply_symbols(value: Any, symbols: dict[str, SymbolRule], src: str, text: str) -> None:
    if not isinstance(value, dict):
        raise RulesError(src, "symbols", "expected a table", _line_of(text, "symbols"))
    for name, entry in value.items():
        key = f"symbols.{name}"
        rule = symbols.get(name)
        if rule is None:
            close = difflib.get_close_matches(name, list(symbols), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise RulesError(src, key, f"no check declares this symbol{hint}", _line_of(text, name))
        table = {"score": entry} if isinstance(entry, int | float) and not isinstance(entry, bool) else entry
        if not isinstance(table, dict):
            raise RulesError(src, key, "expected a table or a score", _line_of(text, name))
        changes: dict[str, Any] = {}
        for k, v in table.items():
            if k == "score":
                changes["score"] = _number(v, src, f"{key}.score", text)
            elif k == "action":
                if v not in ACTIONS:
                    raise RulesError(
                        src,
                        f"{key}.action",
                        f"must be one of {', '.join(map(repr, ACTIONS))}",
                        _line_of(text, name),
                    )
                if rule.always_enforced and v not in ("reject", "tempfail"):
                    raise RulesError(
                        src,
                        f"{key}.action",
                        "this symbol protects the relay and is always enforced",
                        _line_of(text, name),
                    )
                changes["action"] = "" if v == "accept" else v
            elif k == "reply":
                changes["reply"] = _parse_reply(v, src, f"{key}.reply", text) if v else None
            elif k == "description":
                changes["description"] = str(v)
            else:
                raise RulesError(
                    src,
                    f"{key}.{k}",
                    f"unknown key (known: {', '.join(SYMBOL_KEYS)})",
                    _line_of(text, k),
                )
        symbols[name] = replace(rule, **changes)
