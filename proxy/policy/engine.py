"""From symbols to a verdict: accept / tag / tempfail / reject, with the reply a sender gets.

At each stage the session hands the policy every symbol fired so far in the transaction
(connect and HELO symbols included). The action is the strongest of
- the forced action of any fired symbol (``action = "reject"`` in its rules entry), and
- the threshold action of the total score (``[thresholds]``).

Symbols of a check in observe mode, and every symbol when ``server.mode = "observe"``, are
scored and logged but only count toward ``would_be``; the enforced ``action`` ignores them.
``always_enforced`` symbols (relay control, protocol limits) are enforced in every mode.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.model import ACCEPT, Action, Hit, Reply, Stage, Symbol, Verdict
from proxy.policy.rules import Rules, SymbolRule

__all__ = ["ACCEPT", "Action", "Hit", "Policy", "Verdict"]


class Policy:
    """Turns hits into verdicts. Built once per (re)load; cheap to call per stage."""

    def __init__(self, rules: Rules, *, observe: bool = False) -> None:
        self.rules = rules
        self.observe = observe

    def score(self, symbol: Symbol, check: str, *, observe: bool) -> Hit:
        rule = self.rules.symbols.get(symbol.name)
        score = symbol.score if symbol.score is not None else (rule.score if rule else 0.0)
        enforced = rule.always_enforced if rule else False
        return Hit(symbol.name, symbol.evidence, score, check, observe and not enforced)

    def decide(self, hits: Iterable[Hit], stage: Stage) -> Verdict:
        total = enforced_total = 0.0
        action = would = Action.ACCEPT
        cause = ""
        reply: Reply | None = None
        rules = self.rules.symbols
        for h in hits:
            total += h.score
            rule = rules.get(h.name)
            observed = h.observe or (self.observe and not (rule and rule.always_enforced))
            if not observed:
                enforced_total += h.score
            if rule is None or not rule.action:
                continue
            forced = Action.parse(rule.action)
            would = max(would, forced)
            if not observed and forced > action:
                action, cause, reply = forced, h.name, self._reply(rule, forced, stage)
                if reply is not None:
                    reply = reply.with_evidence(h.evidence)
        would = max(would, self.rules.threshold_action(total))
        t_action = self.rules.threshold_action(enforced_total)
        if t_action > action:
            action, cause = t_action, "score"
            reply = self.rules.reply_for(t_action, stage) if t_action >= Action.TEMPFAIL else None
        return Verdict(action, would, total, cause, reply)

    def _reply(self, rule: SymbolRule, action: Action, stage: Stage) -> Reply | None:
        if action < Action.TEMPFAIL:
            return None
        if rule.reply is not None:
            return rule.reply
        return self.rules.reply_for(action, stage)
