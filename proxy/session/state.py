"""The state of one client connection and of each mail transaction on it.

``Connection`` lives from accept to close (aiosmtpd's Session); ``Transaction`` from MAIL to
the end of DATA or RSET (aiosmtpd's Envelope). Checks see both read-only through
:class:`proxy.checks.base.CheckContext`; only the session module writes them.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from typing import Any

from proxy.policy.engine import Hit
from proxy.replies import Reply

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def new_connection_id() -> str:
    """8 hex characters, unique enough across a fleet to find a log line by its ref."""
    return os.urandom(4).hex()


@dataclass(slots=True, eq=False)
class RcptResult:
    address: str
    params: dict[str, str | None]
    reply: Reply | None = None
    accepted: bool = False
    refused_by: str = ""  # "tempfail" / "reject" when spamgate's own policy refused it


@dataclass(slots=True, eq=False)
class Transaction:
    ref: str
    mail_from: str
    mail_params: dict[str, str | None]
    smtputf8: bool = False
    body: str = ""
    rcpts: list[RcptResult] = field(default_factory=list)
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
        return [r.address for r in self.rcpts if r.accepted]


@dataclass(slots=True, eq=False)
class Connection:
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
