"""The configuration schema: one frozen dataclass per TOML section.

Every key has a default and a one-line description (``docs/CONFIG.md`` is generated from
here by ``spamgate docs config``; a test fails when a key has no description or the file is
stale). Check-specific sections (``[checks.<name>]``) are declared by the checks themselves
(see :mod:`proxy.checks.registry`) and validated by the loader against that registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config.fields import opt
from proxy.console.config import ConsoleConfig
from proxy.dns.config import DnsConfig
from proxy.observability.config import MetricsConfig
from proxy.sharing.config import SharingConfig
from proxy.state.config import StoreConfig


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: list[str] = opt(
        ["127.0.0.1:2525"],
        "Addresses to accept SMTP on, 'host:port' or '[v6]:port'; several allowed (IPv4 and IPv6).",
        kind="hostports",
    )
    hostname: str = opt(
        "spamgate.localdomain",
        "Name used in the greeting, EHLO reply, Received header and as the downstream EHLO name.",
    )
    banner: str = opt("ESMTP", "Text after the hostname in the 220 greeting (no version is leaked).")
    workers: int | str = opt(
        1,
        "Worker processes sharing the listen sockets with SO_REUSEPORT: a number, or 'auto' for one per CPU.",
    )
    mode: str = opt(
        "enforce",
        "'enforce' applies verdicts; 'observe' evaluates and logs the would-be action but relays all mail.",
        choices=("enforce", "observe"),
    )
    authserv_id: str = opt(
        "",
        "authserv-id of the Authentication-Results header we add and strip when forged; empty: hostname.",
    )
    drain_timeout: float = opt(
        "30s",
        "On SIGTERM, how long transactions in flight may take to finish before the rest get 421.",
        kind="duration",
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str = opt("", "PEM certificate chain for inbound STARTTLS; STARTTLS is off when empty.")
    key_file: str = opt("", "PEM private key for inbound STARTTLS.")
    require: bool = opt(False, "Refuse MAIL before STARTTLS (530 5.7.0). Not for a public MX.")


@dataclass(frozen=True, slots=True)
class ProxyProtocolConfig:
    trusted_networks: list[str] = opt(
        [],
        "Load balancers allowed to send a HAProxy PROXY v1/v2 header; connections from them must send one.",
        kind="cidrs",
    )
    timeout: float = opt("5s", "How long to wait for the PROXY header.", kind="duration")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_connections: int = opt(2000, "Concurrent connections per worker; beyond it 421 4.7.0.", minimum=1)
    max_connections_per_ip: int = opt(
        20, "Concurrent connections per client IP per worker; beyond it 421 4.7.0.", minimum=1
    )
    max_message_size: int = opt(
        "25M", "Largest message accepted, advertised in SIZE; bigger gets 552 5.3.4.", kind="size"
    )
    max_recipients: int = opt(100, "Recipients per message; extra ones get 452 4.5.3.", minimum=1)
    recipient_overshoot: int = opt(
        100,
        "Recipients past max_recipients answered 452 before each further one counts as an error "
        "(Postfix's smtpd_recipient_overshoot_limit).",
        minimum=0,
    )
    max_junk_commands: int = opt(
        100,
        "NOOP/RSET/VRFY/HELP/EHLO commands allowed between two MAILs; past it each one counts as an error.",
        minimum=1,
    )
    max_errors: int = opt(
        20,
        "Errors a client may cause in one session before 421 4.7.0 and close (downstream refusals count).",
        minimum=1,
    )
    max_transactions: int = opt(
        1000, "Messages per session before 421 4.7.0 (a session is not a pipe).", minimum=1
    )
    command_line_length: int = opt(
        512, "Longest command line in octets including CRLF (RFC 5321 4.5.3.1.4).", minimum=64
    )
    text_line_length: int = opt(
        1000, "Longest message line in octets including CRLF (RFC 5321 4.5.3.1.6).", minimum=78
    )
    max_header_size: int = opt(
        "256K", "Largest header block of a message; bigger gets 552 5.3.4.", kind="size"
    )
    inflight_bytes: int = opt(
        "512M",
        "Message bytes one worker holds at once, over all its sessions; past it DATA gets 451 4.3.1.",
        kind="size",
    )
    idle_timeout: float = opt("300s", "Time a client may take to send its next command.", kind="duration")
    data_timeout: float = opt(
        "600s", "Time a client may take to send a whole message after 354.", kind="duration"
    )
    bare_newline: str = opt(
        "reject",
        "A message with a bare LF or bare CR or a NUL: 'reject' (554 5.5.2; NUL: 554 5.6.0) or "
        "'normalize' (bare CR/LF become CRLF, NULs are removed).",
        choices=("reject", "normalize"),
    )


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    advertise_dsn: bool = opt(
        False,
        "Advertise DSN; DSN parameters are accepted either way and passed on when the downstream has DSN.",
    )
    advertise_smtputf8: bool = opt(True, "Advertise and accept SMTPUTF8 (RFC 6531).")
    forbidden_commands: list[str] = opt(
        ["GET", "POST", "CONNECT", "HEAD", "PUT", "USER"],
        "Commands that show a non-SMTP client (HTTP, POP...): 521 5.5.1 and close at once.",
    )


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One route: recipient domains and the downstreams that serve them (docs/ROUTING.md)."""

    domains: list[str] = opt(
        [], "Recipient domains of this route (exact, case-insensitive); '*' makes it the default route."
    )
    downstreams: list[str] = opt(
        [],
        "Where to relay: 'host:port' (SMTP), 'lmtp:host:port' (LMTP, one recipient per transaction) "
        "or 'mx:' (the recipient domain's MX hosts, port 25); tried in order, failing over.",
    )
    balance: str = opt(
        "order",
        "'order': the first healthy downstream gets everything; 'weighted': spread by weights.",
        choices=("order", "weighted"),
    )
    weights: list[int] = opt([], "Weights for 'weighted', one per downstream; empty: all equal.")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    downstream: str = opt(
        "",
        "The mail server to relay to, 'host:port'. Empty: deliver to the local Maildir (maildir key).",
        kind="hostport",
    )
    maildir: str = opt(
        "var/mail",
        "Local Maildir root used when no downstream is set: one Maildir per recipient. A relative "
        "path is relative to the working directory (make run: ./var/mail of the checkout); "
        "deploy/install.sh writes /var/lib/spamgate/mail.",
    )
    local_domains: list[str] = opt(
        ["example.test"],
        "Domains we accept mail for; any other recipient gets 554 5.7.1 (never an open relay).",
    )
    relay_networks: list[str] = opt(
        [],
        "Client networks allowed to relay to any domain (your own submission hosts).",
        kind="cidrs",
    )
    connect_at: str = opt(
        "mail",
        "When to open the downstream session: at the client's first 'mail', or at 'connect'.",
        choices=("mail", "connect"),
    )
    connect_timeout: float = opt("10s", "Downstream TCP connect + greeting timeout.", kind="duration")
    command_timeout: float = opt("30s", "Downstream reply timeout for each command.", kind="duration")
    data_timeout: float = opt(
        "120s", "Downstream timeout for the message transfer and its final reply.", kind="duration"
    )
    tls: str = opt(
        "off",
        "STARTTLS to the downstream: 'off', 'opportunistic' (if offered) or 'required' (else 451 4.7.5).",
        choices=("off", "opportunistic", "required"),
    )
    tls_server_name: str = opt("", "Name to verify the downstream certificate against; empty: do not verify.")
    tls_ca_file: str = opt("", "CA bundle to verify the downstream certificate; empty: system store.")
    xclient: bool = opt(True, "Send XCLIENT (ADDR, NAME, HELO, PROTO) when the downstream advertises it.")
    xclient_mode: str = opt(
        "optional",
        "'optional': without XCLIENT (not offered, refused, or xclient = false) mail is relayed under"
        " spamgate's own address (a refusal is logged as xclient_refused and counted); 'required':"
        " then the downstream gets no MAIL and the client 451 4.7.0. Use 'required' whenever the"
        " downstream trusts spamgate's address (mynetworks).",
        choices=("optional", "required"),
    )
    pool_size: int = opt(
        64, "Idle downstream sessions kept per worker for reuse by later clients; 0: no reuse.", minimum=0
    )
    pool_idle_timeout: float = opt(
        "20s",
        "How long an idle downstream session is kept; keep below the downstream's timeout.",
        kind="duration",
    )
    pool_max_uses: int = opt(
        100, "Client sessions one downstream session may serve before it is closed.", minimum=1
    )
    routes: list[RouteConfig] = opt(
        [],
        "Routes by recipient domain, [[relay.routes]] tables (keys below, docs/ROUTING.md); a "
        "recipient of no route takes the default route ('*', else downstream, else the Maildir).",
    )
    down_time: float = opt(
        "30s",
        "How long a downstream that refused the connection or timed out is skipped (routes with "
        "several downstreams only).",
        kind="duration",
    )


@dataclass(frozen=True, slots=True)
class TablesConfig:
    local_domains_files: list[str] = opt(
        [],
        "Files of local domains, one per line, added to relay.local_domains (O(1) lookups); "
        "'sqlite:/path.db' reads its table domains(key); 'redis:' the store's SET <prefix>tables:domains.",
    )
    recipient_files: list[str] = opt(
        [],
        "Files of valid recipients, one address per line ('@domain': any user); a recipient of a "
        "listed domain that is not listed gets 550 5.1.1 at RCPT (RCPT_UNKNOWN). Empty: no table. "
        "'sqlite:/path.db' reads its table recipients(key); 'redis:' the SET <prefix>tables:recipients.",
    )
    access_files: list[str] = opt(
        [],
        "Access rules: '<rcpt|from|client>:<key> <OK|REJECT|DEFER|score> [text]' per line "
        "(docs/ROUTING.md); the most specific match wins at RCPT. 'sqlite:/path.db' reads its "
        "table access(key, action, text); 'redis:' the HASH <prefix>tables:access.",
    )
    reload_interval: float = opt(
        "5s",
        "How often the table sources are checked for a change (file mtime and size, Redis "
        "<prefix>tables:version) and re-read.",
        kind="duration",
    )


@dataclass(frozen=True, slots=True)
class DomainPolicyConfig:
    """A policy for some recipient domains (docs/ROUTING.md); unset keys keep the global value."""

    domains: list[str] = opt([], "Recipient domains this policy applies to (exact, case-insensitive).")
    tag: float | None = opt(None, "Tag threshold for these recipients (rules' [thresholds] tag; 0: off).")
    tempfail: float | None = opt(None, "Tempfail threshold for these recipients (0: off).")
    reject: float | None = opt(None, "Reject threshold for these recipients (0: off).")
    greylist: bool = opt(True, "Greylist these recipients (false: GREYLISTED is only logged, as observed).")
    mode: str | None = opt(
        None,
        "'enforce' or 'observe' for these recipients, whatever server.mode says.",
        choices=("enforce", "observe"),
    )
    tag_header: str | None = opt(None, "Header added with value YES when tagged ('' : none).")
    tag_subject_prefix: str | None = opt(None, "Subject prefix when tagged ('' : none).")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    rules_dir: str = opt(
        "",
        "Folder of rule files (*.toml, *.yaml, read in name order); empty: the shipped rules, "
        "rules/ of a source checkout, else the copy inside the installed package.",
    )
    site_rules: list[str] = opt(
        [], "Site rule files read after rules_dir; they override the shipped rules key by key."
    )
    stage_timeout: float = opt(
        "10s",
        "Budget for all checks of one stage; checks still running then yield STAGE_TIMEOUT.",
        kind="duration",
    )
    header_symbols: str = opt(
        "X-Spamgate-Symbols", "Header listing the symbols, score and action; empty: not added."
    )
    header_score: str = opt("X-Spamgate-Score", "Header with the total score; empty: not added.")
    tag_header: str = opt("X-Spam-Flag", "Header added with value YES when the action is tag.")
    tag_subject_prefix: str = opt("", "Prefix added to the Subject when the action is tag; empty: none.")
    domains: list[DomainPolicyConfig] = opt(
        [],
        "Per recipient domain policies, [[policy.domains]] tables (keys below); one transaction "
        "carries one policy's recipients (others get 452 4.5.3).",
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = opt("info", "Log level.", choices=("debug", "info", "warning", "error"))
    format: str = opt(
        "json",
        "'json' (one object per line) or 'console' (for people).",
        choices=("json", "console"),
    )
    file: str = opt(
        "",
        "Log file; empty: standard output. Reopened at this path on SIGUSR1 and SIGHUP (log rotation).",
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; add a subsystem's section as a field here and in CORE_SECTIONS."""

    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    proxy_protocol: ProxyProtocolConfig = field(default_factory=ProxyProtocolConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    # [checks.<name>] tables, built from each check's own options class.
    checks: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def check(self, name: str) -> Any:
        return self.checks[name]


CORE_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tls": TlsConfig,
    "proxy_protocol": ProxyProtocolConfig,
    "limits": LimitsConfig,
    "smtp": SmtpConfig,
    "relay": RelayConfig,
    "tables": TablesConfig,
    "policy": PolicyConfig,
    "log": LogConfig,
    "dns": DnsConfig,
    "store": StoreConfig,
    "metrics": MetricsConfig,
    "console": ConsoleConfig,
    "sharing": SharingConfig,
}
