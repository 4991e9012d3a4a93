"""Per recipient domain policy: thresholds, greylisting, tag header and subject, observe mode.

``[[policy.domains]]`` tables name recipient domains and override what they set; everything
else is the global policy. :class:`DomainPolicies` answers, in one dict lookup, which
:class:`DomainPolicy` a recipient's domain has; recipients of no table share the global one.
The session judges each RCPT by its own domain's policy, and keeps one policy per
transaction: a recipient whose policy differs from the transaction's gets 452 4.5.3 and is
sent again in its own transaction, so the DATA verdict (and the tag) is exact for every
recipient (docs/ROUTING.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from proxy.config.fields import ConfigError
from proxy.config.schema import Config, DomainPolicyConfig
from proxy.policy.engine import Policy
from proxy.policy.rules import Rules


@dataclass(frozen=True, slots=True, eq=False)
class DomainPolicy:
    name: str  # the first domain of its table, "global" for the default
    policy: Policy
    greylist: bool
    tag_header: str
    tag_subject_prefix: str

    @property
    def mode(self) -> str:
        return "observe" if self.policy.observe else "enforce"

    def describe(self) -> str:
        r = self.policy.rules
        greylist = "on" if self.greylist else "off"
        thresholds = f"tag={r.tag:g} tempfail={r.tempfail:g} reject={r.reject:g}"
        return f"{self.name}: {thresholds} greylist={greylist} mode={self.mode}"


def _build(name: str, dc: DomainPolicyConfig, rules: Rules, config: Config) -> DomainPolicy:
    changes = {k: getattr(dc, k) for k in ("tag", "tempfail", "reject") if getattr(dc, k) is not None}
    observe = (dc.mode or config.server.mode) == "observe"
    pol = config.policy
    return DomainPolicy(
        name,
        Policy(dataclasses.replace(rules, **changes), observe=observe),
        dc.greylist,
        pol.tag_header if dc.tag_header is None else dc.tag_header,
        pol.tag_subject_prefix if dc.tag_subject_prefix is None else dc.tag_subject_prefix,
    )


class DomainPolicies:
    def __init__(self, config: Config, policy: Policy) -> None:
        pol = config.policy
        self.default = DomainPolicy("global", policy, True, pol.tag_header, pol.tag_subject_prefix)
        self.by_domain: dict[str, DomainPolicy] = {}
        for i, dc in enumerate(pol.domains):
            if not dc.domains:
                raise ConfigError(f"policy.domains[{i}].domains", "a domain policy needs domains")
            dp = _build(dc.domains[0].lower().rstrip("."), dc, policy.rules, config)
            for raw in dc.domains:
                d = raw.lower().rstrip(".")
                if d in self.by_domain:
                    raise ConfigError(f"policy.domains[{i}].domains", f"{d!r} has two policies")
                self.by_domain[d] = dp

    def for_rcpt(self, address: str) -> DomainPolicy:
        return self.by_domain.get(address.rpartition("@")[2].lower().rstrip("."), self.default)
