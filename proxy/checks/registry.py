"""Every check spamgate knows, in stage order. Add a check: write its module, list it here,
give its symbols a line in ``rules/`` if the default score should differ, run ``make docs``.
"""

from __future__ import annotations

from proxy.checks.base import Check, SymbolDef
from proxy.checks.connect.dnsbl import Dnsbl
from proxy.checks.connect.feeds import Feeds
from proxy.checks.connect.penalty_box import PenaltyBoxCheck
from proxy.checks.connect.pregreet import Pregreet
from proxy.checks.connect.ratelimit import RateLimit
from proxy.checks.connect.rdns import Rdns
from proxy.checks.connect.reputation import Reputation
from proxy.checks.connect.static_lists import StaticLists
from proxy.checks.core_symbols import CORE_SYMBOLS
from proxy.checks.data.abuse_report import AbuseReport
from proxy.checks.data.arc import Arc
from proxy.checks.data.attachments import Attachments
from proxy.checks.data.auth_results import AuthResults
from proxy.checks.data.clamav import Clamav
from proxy.checks.data.dkim import Dkim
from proxy.checks.data.dmarc import Dmarc
from proxy.checks.data.headers import HeaderSanity
from proxy.checks.data.mime import MimeStructure
from proxy.checks.data.phishing import Phishing
from proxy.checks.data.rspamd import RspamdCheck
from proxy.checks.data.spamassassin import Spamassassin
from proxy.checks.data.uribl import Uribl
from proxy.checks.helo.dns import HeloDns
from proxy.checks.helo.syntax import HeloSyntax
from proxy.checks.mail.ratelimit import RateLimitMail
from proxy.checks.mail.rhsbl import Rhsbl
from proxy.checks.mail.sender_domain import SenderDomain
from proxy.checks.mail.sender_syntax import SenderSyntax
from proxy.checks.mail.spf import Spf
from proxy.checks.rcpt.access_tables import AccessTables
from proxy.checks.rcpt.greylist import Greylist
from proxy.checks.rcpt.ratelimit import RateLimitRcpt
from proxy.checks.rcpt.recipient_cache import RecipientCache
from proxy.checks.rcpt.relay_control import RelayControl
from proxy.checks.rcpt.spamtrap import Spamtrap

CHECKS: tuple[type[Check], ...] = (
    # connect
    StaticLists,
    RateLimit,
    Reputation,
    Pregreet,
    Dnsbl,
    Rdns,
    PenaltyBoxCheck,
    Feeds,
    # helo
    HeloSyntax,
    HeloDns,
    # mail
    SenderSyntax,
    SenderDomain,
    Rhsbl,
    Spf,
    RateLimitMail,
    # rcpt
    RelayControl,
    AccessTables,
    Greylist,
    RateLimitRcpt,
    Spamtrap,
    RecipientCache,
    # data
    HeaderSanity,
    Dkim,
    Arc,
    Dmarc,
    AuthResults,
    # data: content (one shared analysis of the message, proxy/checks/contentutil.py)
    MimeStructure,
    Attachments,
    Phishing,
    Uribl,
    # data: external scanners (proxy/scan/)
    Clamav,
    RspamdCheck,
    Spamassassin,
    AbuseReport,
)

# Checks that protect the relay: they cannot be disabled or observed.
MANDATORY = frozenset({"relay_control"})


def by_name() -> dict[str, type[Check]]:
    return {c.name: c for c in CHECKS}


def all_symbol_defs() -> dict[str, SymbolDef]:
    defs: dict[str, SymbolDef] = {d.name: d for d in CORE_SYMBOLS}
    for c in CHECKS:
        for d in c.symbols:
            if d.name in defs:
                raise RuntimeError(f"symbol {d.name} declared twice ({c.name})")
            defs[d.name] = d
    return defs


def symbol_owner() -> dict[str, str]:
    owner = {d.name: "core" for d in CORE_SYMBOLS}
    for c in CHECKS:
        for d in c.symbols:
            owner[d.name] = c.name
    return owner
