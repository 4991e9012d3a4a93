"""Phishing hints in the message's links and HTML (DATA stage), from the shared analysis.

- ``PHISH_LINK_MISMATCH{shown->target}``: an HTML link whose visible text shows a domain
  (``https://www.bank.example/``) while the link goes to another registrable domain. Links to
  ``redirectors`` (newsletter click trackers of the site's choice) are not counted.
- ``PHISH_IP_LINK{address}``: a link (href, src, or in text) to a bare IP address.
- ``PHISH_HTML_FORM{action}``: an HTML part holds a form (credentials typed into a mail).

Each is a weight, none rejects on its own: newsletters trip the first now and then.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.contentutil import content, registrable
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

PHISH_LINK_MISMATCH = SymbolDef(
    "PHISH_LINK_MISMATCH",
    "A link's visible text shows one domain and the link goes to another (evidence shown->target).",
    score=3.0,
    remedy="Make the visible text of each link name the site it really opens (or no site at all).",
)
PHISH_IP_LINK = SymbolDef(
    "PHISH_IP_LINK",
    "A link points to a bare IP address instead of a host name.",
    score=2.0,
    remedy="Link to a host name of your own domain, not to an address.",
)
PHISH_HTML_FORM = SymbolDef(
    "PHISH_HTML_FORM",
    "The HTML of the message contains a form (evidence: its action).",
    score=2.0,
    remedy="Do not put forms in mail; link to the form on your web site.",
)


@dataclass(frozen=True, slots=True)
class PhishingOptions(BaseOptions):
    redirectors: list[str] = opt(
        [],
        "Registrable domains of click-tracking redirectors whose links may show another domain "
        "(e.g. your newsletter provider's).",
    )


class Phishing(Check):
    name = "phishing"
    stage = Stage.DATA
    symbols = (PHISH_LINK_MISMATCH, PHISH_IP_LINK, PHISH_HTML_FORM)
    Options = PhishingOptions
    description = "Phishing hints: link text showing another domain, links to IP addresses, HTML forms."
    io = True  # awaits the shared analysis, which may run in a thread

    def __init__(self, options: PhishingOptions, services: Services) -> None:
        super().__init__(options, services)
        self.redirectors = frozenset(d.lower().strip(".") for d in options.redirectors)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        found = await content(ctx, self.services)
        mismatch: dict[str, None] = {}
        ips: dict[str, None] = {}
        for link in found.links:
            if link.is_ip:
                ips[link.host] = None
            if link.text_host:
                shown = registrable(link.text_host) or link.text_host
                target = registrable(link.host) or link.host
                if shown != target and target not in self.redirectors:
                    mismatch[f"{shown}->{target}"] = None
        out: list[Symbol] = []
        if mismatch:
            out.append(PHISH_LINK_MISMATCH.hit(",".join(list(mismatch)[:5])))
        if ips:
            out.append(PHISH_IP_LINK.hit(",".join(list(ips)[:5])))
        if found.forms:
            out.append(PHISH_HTML_FORM.hit(",".join(a[:80] or "(none)" for a in found.forms[:3])))
        return out
