"""Routes by recipient domain, several downstreams per route, failover and health.

A :class:`Router` (one per configuration generation and worker) maps a recipient domain to a
:class:`Route` in one dict lookup; a route holds :class:`Endpoint` s, each a downstream with
its own session pool and health. :meth:`Router.begin` starts a transaction (connect, greeting,
EHLO/LHLO, XCLIENT, MAIL) on the first endpoint that works: an endpoint that refuses the
connection, times out or drops at that stage is skipped and, on a route with several, marked
down for ``relay.down_time``; the client never sees that failover. Nothing has been sent for
the transaction when it happens, so it cannot duplicate mail. Once MAIL was accepted the
transaction stays on that endpoint (a later failure is a 4xx, as with one downstream).

Targets: ``host:port`` (SMTP), ``lmtp:host:port`` (LMTP), ``mx:`` / ``mx:PORT`` (the recipient
domain's MX hosts in preference order, their addresses from spamgate's resolver). The
default route is the one listing ``*``, else ``relay.downstream``, else the local Maildir.
See docs/ROUTING.md.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from proxy.config.fields import ConfigError, parse_hostport
from proxy.config.schema import RelayConfig, RouteConfig
from proxy.observability import metrics
from proxy.relay.base import ClientIdentity, Downstream
from proxy.relay.lmtp import LmtpDownstream
from proxy.relay.maildir import MaildirDownstream
from proxy.relay.pool import DownstreamPool
from proxy.relay.smtp import SmtpDownstream
from proxy.replies import DOWNSTREAM_LOST, DOWNSTREAM_TLS, DOWNSTREAM_UNAVAILABLE, DOWNSTREAM_XCLIENT, Reply

log = structlog.get_logger("spamgate")
# Failures at the start of a transaction that the next endpoint may not have.
FAILOVER = (DOWNSTREAM_UNAVAILABLE, DOWNSTREAM_LOST, DOWNSTREAM_TLS, DOWNSTREAM_XCLIENT)
MAX_MX_ENDPOINTS = 1000  # endpoints made from MX answers, per worker


class MxResolver(Protocol):
    async def lookup(self, name: str, rdtype: str) -> Any: ...


@dataclass(eq=False)
class Endpoint:
    """One downstream: its address, kind (smtp, lmtp, maildir), pool and health."""

    name: str
    kind: str
    pool: DownstreamPool | None
    maildir: str = ""
    down_until: float = 0.0
    failures: int = 0

    def acquire(self) -> Downstream:
        if self.pool is None:
            return MaildirDownstream(self.maildir)
        ds: Downstream = self.pool.acquire()
        ds.uses += 1  # type: ignore[attr-defined]
        return ds

    def release(self, ds: Downstream) -> None:
        if self.pool is not None:
            self.pool.release(ds)  # type: ignore[arg-type]
        else:
            _close_later(ds)

    def healthy(self, now: float) -> bool:
        return self.down_until <= now


@dataclass(eq=False)
class Route:
    name: str
    endpoints: list[Endpoint]
    balance: str = "order"
    weights: list[int] = field(default_factory=list)
    mx_port: int = 0  # > 0: the endpoints are the recipient domain's MX hosts

    @property
    def one_rcpt(self) -> bool:
        """LMTP: the client gets one reply to DATA, so one recipient per transaction."""
        return any(e.kind == "lmtp" for e in self.endpoints)

    def order(self, now: float, first: Endpoint | None = None) -> list[Endpoint]:
        """Healthy endpoints in the order to try (a held one first when it is one of them)."""
        eps = self.endpoints
        if len(eps) > 1:
            if self.balance == "weighted":
                weights = self.weights or [1] * len(eps)
                # A weighted random permutation: key u^(1/w), highest first (Efraimidis-Spirakis).
                keyed = [
                    (random.random() ** (1.0 / max(w, 1e-9)), e) for w, e in zip(weights, eps, strict=True)
                ]
                eps = [e for _, e in sorted(keyed, key=lambda k: -k[0])]
            eps = [e for e in eps if e.healthy(now)]
        if first is not None and first in eps:
            eps = [first, *(e for e in eps if e is not first)]
        return eps


@dataclass(eq=False)
class Lease:
    """A downstream session held by a client session, and where it came from."""

    route: Route
    endpoint: Endpoint
    ds: Downstream


def _close_later(ds: Downstream) -> None:
    task = asyncio.ensure_future(ds.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[Any]] = set()


class Router:
    def __init__(self, cfg: RelayConfig, helo_name: str, resolver: MxResolver | None = None) -> None:
        self.cfg = cfg
        self.helo_name = helo_name
        self.resolver = resolver
        self.by_domain: dict[str, Route] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.closed = False
        default: Route | None = None
        for i, rc in enumerate(cfg.routes):
            route = self._route(rc, f"relay.routes[{i}]")
            for raw in rc.domains:
                d = raw.lower().rstrip(".")
                if d == "*":
                    default = route
                elif d in self.by_domain:
                    raise ConfigError(f"relay.routes[{i}].domains", f"{d!r} is in two routes")
                else:
                    self.by_domain[d] = route
        if default is None:
            target = cfg.downstream or "maildir:"
            default = Route("default", [self._endpoint(target, "relay.downstream")])
        self.default = default

    # -- building ----------------------------------------------------------------------------

    def _route(self, rc: RouteConfig, path: str) -> Route:
        if not rc.downstreams:
            raise ConfigError(f"{path}.downstreams", "a route needs at least one downstream")
        if rc.weights and len(rc.weights) != len(rc.downstreams):
            raise ConfigError(f"{path}.weights", "one weight per downstream")
        if not rc.domains:
            raise ConfigError(f"{path}.domains", "a route needs domains ('*' for the default route)")
        name = rc.domains[0].lower()
        mx = [t for t in rc.downstreams if t.startswith("mx:")]
        if mx:
            if len(rc.downstreams) > 1:
                raise ConfigError(f"{path}.downstreams", "'mx:' must be the route's only downstream")
            port = mx[0][3:] or "25"
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{path}.downstreams", f"invalid port in {mx[0]!r}")
            return Route(name, [], mx_port=int(port))
        eps = [self._endpoint(t, f"{path}.downstreams[{j}]") for j, t in enumerate(rc.downstreams)]
        return Route(name, eps, rc.balance, list(rc.weights))

    def _endpoint(self, target: str, path: str) -> Endpoint:
        found = self.endpoints.get(target)
        if found is not None:
            return found  # one pool and one health per downstream, whatever routes share it
        cfg, helo = self.cfg, self.helo_name
        if target == "maildir:":
            ep = Endpoint("maildir", "maildir", None, maildir=cfg.maildir)
        elif target.startswith("lmtp:"):
            address = target[5:]
            parse_hostport(address, path, default_port=24)
            pool = DownstreamPool(cfg, helo, lambda: LmtpDownstream(cfg, helo, address))
            ep = Endpoint(target, "lmtp", pool)
        else:
            parse_hostport(target, path)
            pool = DownstreamPool(cfg, helo, lambda: SmtpDownstream(cfg, helo, target))
            ep = Endpoint(target, "smtp", pool)
        self.endpoints[target] = ep
        return ep

    # -- routing -------------------------------------------------------------------------------

    def route_for(self, domain: str) -> Route:
        return self.by_domain.get(domain.lower().rstrip("."), self.default)

    @property
    def by_recipient(self) -> bool:
        """Routes depend on the recipient: the downstream transaction starts at the first RCPT."""
        return bool(self.by_domain) or self.default.mx_port > 0

    async def _mx_endpoints(self, route: Route, domain: str) -> list[Endpoint]:
        """The domain's MX hosts (RFC 5321 5.1: preference order; no MX: the domain itself)."""
        if self.resolver is None:
            return []
        res = await self.resolver.lookup(domain, "MX")
        hosts: list[str] = []
        if res.status == "ok":
            hosts = [h for _, h in sorted(res.records)]
        elif res.status == "nodata":
            hosts = [domain]  # no MX: the domain itself is the implicit MX
        eps: list[Endpoint] = []
        for host in hosts[:10]:
            if host in ("", "."):
                continue  # null MX (RFC 7505): no mail
            addrs = await self.resolver.lookup(host, "A")
            for ip in (addrs.records if addrs.status == "ok" else [])[:4]:
                target = f"{ip}:{route.mx_port}"
                if target not in self.endpoints and len(self.endpoints) >= MAX_MX_ENDPOINTS:
                    continue
                eps.append(self._endpoint(target, "mx"))
        now = time.monotonic()
        healthy = [e for e in eps if e.healthy(now)]
        return healthy if len(eps) > 1 else eps

    async def begin(
        self,
        route: Route,
        domain: str,
        *,
        sender: str,
        params: dict[str, str | None],
        identity: ClientIdentity,
        held: Lease | None,
    ) -> tuple[Lease | None, Reply]:
        """MAIL on the first endpoint of ``route`` that works; ``held`` is reused or released."""
        now = time.monotonic()
        first = held.endpoint if held is not None else None
        if route.mx_port:
            candidates = await self._mx_endpoints(route, domain)
            if first in candidates:
                candidates = [first, *(e for e in candidates if e is not first)]
        else:
            candidates = route.order(now, first)
        several = len(route.endpoints) > 1 or len(candidates) > 1
        last = DOWNSTREAM_UNAVAILABLE
        for ep in candidates:
            if held is not None and held.endpoint is ep:
                ds, held = held.ds, None
            else:
                if held is not None:
                    self.release(held)
                    held = None
                ds = ep.acquire()
            reply = await ds.mail(sender, params, identity)
            if reply not in FAILOVER:
                ep.failures = 0
                return Lease(route, ep, ds), reply
            ep.release(ds)
            last = reply
            if several and reply in (DOWNSTREAM_UNAVAILABLE, DOWNSTREAM_LOST):
                ep.failures += 1
                ep.down_until = time.monotonic() + self.cfg.down_time
                log.warning("downstream_down", downstream=ep.name, route=route.name, reply=str(reply))
                metrics.downstream_down(route.name, ep.name)
        if held is not None:
            self.release(held)
        return None, (DOWNSTREAM_UNAVAILABLE if several else last)

    async def connect(self, route: Route) -> tuple[Lease | None, Reply | None]:
        """Open a session ahead of any transaction (``relay.connect_at = "connect"``)."""
        for ep in route.order(time.monotonic()):
            ds = ep.acquire()
            failure = await ds.open()
            if failure is None:
                return Lease(route, ep, ds), None
            ep.release(ds)
        return None, DOWNSTREAM_UNAVAILABLE

    def release(self, lease: Lease) -> None:
        if self.closed:
            _close_later(lease.ds)
        else:
            lease.endpoint.release(lease.ds)

    async def close(self) -> None:
        self.closed = True
        pools = [e.pool for e in self.endpoints.values() if e.pool is not None]
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
