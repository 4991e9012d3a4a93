"""The types every layer shares, in one leaf module that imports nothing of the project.

- :class:`Reply`: an SMTP reply with its enhanced status code (the catalogue of spamgate's own
  replies is :mod:`proxy.replies`).
- :class:`Stage`: the SMTP stages in the order a session meets them.
- :class:`SymbolDef` / :class:`Symbol` / :class:`Hit`: what a check can emit, what it emitted,
  and that emission scored by the rules.
- :class:`Action` / :class:`Verdict`: what the policy decided.
- :class:`Connection` / :class:`Transaction` / :class:`RcptResult`: the state of one client
  connection and of each mail transaction on it. Only the session writes them; checks read
  them through their stage context.

Layers above import from here; this module imports only the standard library, so no import
cycle can run through it.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REPLY_RE = re.compile(r"^([2-5][0-9][0-9])(?:[ -]([245]\.[0-9]{1,3}\.[0-9]{1,3}))?(?:[ -](.*))?$", re.S)


def default_enhanced(code: int) -> str:
    return {2: "2.0.0", 3: "", 4: "4.0.0", 5: "5.0.0"}[code // 100]


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, line: str) -> Reply:
        """``"550 5.7.1 Rejected"`` -> Reply. A missing enhanced code is derived from the class."""
        m = _REPLY_RE.match(line.strip())
        if not m:
            raise ValueError(f"not an SMTP reply: {line!r}")
        code = int(m.group(1))
        enhanced = m.group(2) or default_enhanced(code)
        if enhanced[0] != str(code)[0]:
            raise ValueError(f"enhanced code {enhanced} does not match reply code {code}")
        return cls(code, enhanced, (m.group(3) or "").strip())

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    def with_ref(self, ref: str) -> Reply:
        return replace(self, text=f"[ref {ref}] {self.text}") if ref else self

    def with_evidence(self, evidence: str) -> Reply:
        """A rule's reply text may name ``{evidence}`` (greylisting's "try again in {evidence}s")."""
        if "{evidence}" not in self.text:
            return self
        return replace(self, text=self.text.replace("{evidence}", evidence))

    def render(self) -> str:
        """The reply as written on the wire (without the final CRLF); multi-line aware."""
        lines = self.text.split("\n") if self.text else [""]
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            body = f"{self.enhanced} {line}".rstrip() if self.enhanced else line
            out.append(f"{self.code}{sep}{body}")
        return "\r\n".join(out)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("\n", " / ")


class Stage(enum.IntEnum):
    """SMTP stages in the order a session meets them."""

    CONNECT = 0
    HELO = 1
    MAIL = 2
    RCPT = 3
    DATA = 4

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class SymbolDef:
    """A symbol a check can emit. ``score`` is the default; ``rules/`` may override it.

    ``action`` forces a minimum action whenever the symbol fires ("tempfail" or "reject");
    ``reply`` is the SMTP reply used for it (``"554 5.7.1 Relay access denied"``).
    ``always_enforced`` symbols (relay control, protocol limits) keep their action even in
    observe mode: observe mode must never turn spamgate into an open relay.
    """

    name: str
    description: str
    score: float = 0.0
    remedy: str = ""
    action: str = ""
    reply: str = ""
    always_enforced: bool = False

    def hit(self, evidence: str = "", score: float | None = None) -> Symbol:
        return Symbol(self.name, evidence, score)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One fired symbol with its evidence (the "options" of rspamd, the "reason" of Haraka).

    ``score`` is for symbols whose weight is configured per item rather than per symbol (a DNS
    list's ``zone*weight``); when None, the rules' score for the symbol applies.
    """

    name: str
    evidence: str = ""
    score: float | None = None


class Action(enum.IntEnum):
    ACCEPT = 0
    TAG = 1
    TEMPFAIL = 2
    REJECT = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Action:
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Hit:
    """A fired symbol with the score the rules give it."""

    name: str
    evidence: str
    score: float
    check: str
    observe: bool = False

    def render(self) -> str:
        ev = f"{{{self.evidence}}}" if self.evidence else ""
        flag = "~" if self.observe else ""
        return f"{flag}{self.name}({self.score:g}){ev}"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    would_be: Action
    score: float
    cause: str  # the symbol that forced the action, or "score"
    reply: Reply | None  # the reply for tempfail/reject (without the ref)


ACCEPT = Verdict(Action.ACCEPT, Action.ACCEPT, 0.0, "", None)


def new_connection_id() -> str:
    """20 hex characters (80 random bits): unique across a fleet at ISP volume.

    The id keys log lines, ``explain --ref`` and fleet-wide concurrency slots. With 32 bits a
    fleet handling millions of connections a day sees collisions within hours; with 80 bits,
    a billion connections a day kept for a year (3.7e11 ids) give a collision probability of
    about 5e-2 over the whole year's logs and far less among ids alive at the same time.
    """
    return os.urandom(10).hex()


@dataclass(slots=True, eq=False)
class RcptResult:
    address: str
    params: dict[str, str | None]
    reply: Reply | None = None
    accepted: bool = False
    refused_by: str = ""  # "tempfail" / "reject" when spamgate's own policy refused it


@dataclass(slots=True, eq=False)
class Transaction:
    """One mail transaction: from MAIL to the end of DATA, RSET, or the end of the session."""

    ref: str
    mail_from: str
    mail_params: dict[str, str | None]
    smtputf8: bool = False
    body: str = ""
    rcpts: list[RcptResult] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # accepted recipients, kept incrementally
    refused: int = 0  # RCPTs refused or not recorded (past the recipient limits)
    hits: list[Hit] = field(default_factory=list)
    size: int = 0
    started: float = field(default_factory=time.monotonic)
    stage_ms: dict[str, float] = field(default_factory=dict)
    downstream_reply: Reply | None = None
    final_reply: Reply | None = None
    action: str = ""
    would_be: str = ""
    score: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted_rcpts(self) -> list[str]:
        return self.accepted


@dataclass(slots=True, eq=False)
class Connection:
    """One client connection, from accept to close."""

    id: str
    ip: IPAddress
    port: int
    peer: tuple[str, int]  # the TCP peer (a load balancer when PROXY protocol is used)
    local_port: int = 0
    started: float = field(default_factory=time.monotonic)
    reverse_name: str = ""  # forward-confirmed PTR name, when the rDNS check found one
    helo: str = ""
    esmtp: bool = False
    tls: str = ""  # "TLSv1.3 TLS_AES_256_GCM_SHA384" once STARTTLS is done
    connect_hits: list[Hit] = field(default_factory=list)
    helo_hits: list[Hit] = field(default_factory=list)  # replaced by each HELO/EHLO
    txn_count: int = 0
    errors: int = 0
    junk: int = 0  # commands that move no mail (NOOP, RSET, VRFY, HELP...) since the last MAIL
    notes: dict[str, Any] = field(default_factory=dict)  # shared between checks of one session
    rejected: Reply | None = None  # a connect/HELO stage rejection that sticks

    @property
    def hits(self) -> list[Hit]:
        """Symbols of the connection so far (connect and HELO stages)."""
        return self.connect_hits + self.helo_hits

    @property
    def ip_str(self) -> str:
        return str(self.ip)

    def next_ref(self) -> str:
        self.txn_count += 1
        return f"{self.id}.{self.txn_count}"

    @property
    def conn_ref(self) -> str:
        return f"{self.id}.0"
