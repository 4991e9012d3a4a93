"""The client session's downstream side: which route, which downstream, when MAIL goes out.

``SessionRelay`` holds the one downstream session (a :class:`~proxy.relay.router.Lease`) a
client session uses at a time. With only a default route the downstream MAIL goes out at the
client's MAIL, and the client gets the downstream's own reply (as before routes existed).
With routes by recipient domain the route is known only at the first RCPT the policy
accepts: the client's MAIL gets our ``250 2.1.0``, and the downstream MAIL (with failover) is
sent just before that first RCPT; a downstream refusal of MAIL is then the reply to that RCPT.

One transaction, one route (docs/ROUTING.md): a recipient of another route gets
``452 4.5.3`` (the sender sends it again in a new transaction, as for too many recipients),
and so does a second recipient on an LMTP route (one reply to DATA means one recipient).
"""

from __future__ import annotations

from proxy import replies as R
from proxy.model import Reply, Transaction
from proxy.relay.base import ClientIdentity
from proxy.relay.router import Lease, Route, Router

SPLIT_REPLIES = (R.OTHER_ROUTE, R.LMTP_ONE_RCPT)


class SessionRelay:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.lease: Lease | None = None
        self.route: Route | None = None  # the transaction's route, once its MAIL went out
        self.domain = ""
        self.sender = ""
        self.params: dict[str, str | None] = {}
        self.identity: ClientIdentity | None = None

    async def open(self) -> None:
        """``relay.connect_at = "connect"``: open a session to the default route's first downstream."""
        if self.router.by_recipient or self.lease is not None:
            return
        route = self.router.default
        lease, _ = await self.router.connect(route)
        self.lease = lease

    async def mail(self, txn: Transaction, identity: ClientIdentity) -> Reply:
        self.route = None
        self.sender, self.params, self.identity = txn.mail_from, txn.mail_params, identity
        if self.router.by_recipient:
            return R.SENDER_OK
        return await self._begin(txn, self.router.default, "")

    async def _begin(self, txn: Transaction, route: Route, domain: str) -> Reply:
        assert self.identity is not None
        lease, reply = await self.router.begin(
            route, domain, sender=self.sender, params=self.params, identity=self.identity, held=self.lease
        )
        self.lease = lease
        if lease is not None and reply.is_positive:
            self.route, self.domain = route, domain
            txn.notes["downstream"] = (route.name, lease.endpoint.name)
        return reply

    async def rcpt(self, txn: Transaction, address: str, params: dict[str, str | None]) -> Reply:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        route = self.router.route_for(domain)
        if self.route is None:
            if not self.router.by_recipient:
                return R.DOWNSTREAM_LOST  # the MAIL failed: no transaction to add to
            reply = await self._begin(txn, route, domain)
            if not reply.is_positive:
                return reply
        elif route is not self.route or (route.mx_port and domain != self.domain):
            return R.OTHER_ROUTE
        elif route.one_rcpt and txn.accepted:
            return R.LMTP_ONE_RCPT
        assert self.lease is not None
        return await self.lease.ds.rcpt(address, params)

    def route_of(self, address: str) -> Route:
        return self.router.route_for(address.rpartition("@")[2])

    async def data(self, message: bytes) -> Reply:
        if self.lease is None or self.route is None:
            return R.DOWNSTREAM_LOST
        return await self.lease.ds.data(message)

    async def rset(self) -> None:
        """The transaction is over (refused, RSET, new HELO): no downstream transaction is left."""
        self.route = None
        if self.lease is not None:
            await self.lease.ds.rset()

    def release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            self.router.release(lease)
