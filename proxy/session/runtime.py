"""What every session of a worker shares: configuration, pipeline, policy, counters.

One ``Runtime`` per worker process. A reload builds the new config, rules and pipeline first
and swaps them in only when all of them loaded; sessions in flight keep the ones they started
with (they hold a reference to the :class:`Generation`).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Protocol

from proxy.checks.base import Services
from proxy.config.fields import ConfigError
from proxy.config.schema import Config
from proxy.model import Transaction
from proxy.policy.domains import DomainPolicies
from proxy.policy.engine import Policy
from proxy.relay.router import Router
from proxy.session.pipeline import Pipeline

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Generation:
    """One loaded configuration: config, policy, pipeline; replaced whole on reload."""

    config: Config
    policy: Policy
    pipeline: Pipeline
    services: Services
    tls_context: ssl.SSLContext | None
    trusted_proxies: list[Network]
    forbidden: frozenset[str]
    authserv_id: str
    domain_policies: DomainPolicies
    _router: Router | None = None

    @property
    def router(self) -> Router:
        """Routes and downstream pools, built at first use (on the worker's event loop)."""
        if self._router is None:
            self._router = Router(self.config.relay, self.config.server.hostname, self.services.resolver)
        return self._router


def build_tls_context(config: Config) -> ssl.SSLContext | None:
    """The inbound STARTTLS context; a bad certificate or key is a ConfigError naming the key."""
    tls = config.tls
    if not tls.cert_file:
        if tls.key_file:
            raise ConfigError("tls.cert_file", "key_file is set but cert_file is empty")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        key = f" / {tls.key_file}" if tls.key_file else ""
        raise ConfigError(
            "tls.cert_file", f"cannot load certificate {tls.cert_file}{key}: {exc}", config.source
        ) from None
    return ctx


class Session(Protocol):
    """What the worker needs of a live client session (drain, counts)."""

    @property
    def txn(self) -> Transaction | None: ...

    def shutdown(self, reason: str) -> None: ...


@dataclass(slots=True, eq=False)
class Runtime:
    gen: Generation
    sessions: set[Session] = field(default_factory=set)
    per_ip: dict[str, int] = field(default_factory=dict)
    draining: bool = False
    inflight: int = 0  # message bytes held by this worker's sessions (limits.inflight_bytes)

    def admit(self, ip: str) -> str:
        """Count a new connection; '' if admitted, else why not ('total' or 'ip')."""
        limits = self.gen.config.limits
        if len(self.sessions) > limits.max_connections:
            return "total"
        n = self.per_ip.get(ip, 0)
        if n >= limits.max_connections_per_ip:
            return "ip"
        self.per_ip[ip] = n + 1
        return ""

    def release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = n
