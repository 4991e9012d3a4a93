"""The Authentication-Results header (RFC 8601) at DATA, under our authserv-id.

Reports iprev (from the rdns check: ``conn.reverse_name``, ``RDNS_*`` symbols), spf
(``txn.notes["spf_result"]``), every dkim signature, dmarc and arc, each only when its check
ran. Emits no symbol: it puts the header in ``txn.notes["add_headers"]``, which the session
prepends to the relayed message (after removing any forged header with our authserv-id,
``server.authserv_id`` or else ``server.hostname``).
"""

from __future__ import annotations

import ipaddress

from proxy.auth.results import method, render
from proxy.auth.spf import SpfResult
from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol
from proxy.checks.data.arc import arc_result
from proxy.checks.data.dkim import signatures
from proxy.checks.data.dmarc import dmarc_result
from proxy.checks.options import BaseOptions

HEADER = "Authentication-Results"


class AuthResults(Check):
    name = "auth_results"
    stage = Stage.DATA
    symbols = ()
    Options = BaseOptions
    description = "Adds the Authentication-Results header (iprev, spf, dkim, dmarc, arc)."
    io = True

    def __init__(self, options: BaseOptions, services: Services) -> None:
        super().__init__(options, services)
        self.own = [ipaddress.ip_network(n, strict=False) for n in services.config.relay.relay_networks]

    def _enabled(self, name: str) -> bool:
        opts = self.services.config.checks.get(name)
        return bool(opts is not None and opts.enabled)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        txn = ctx.txn
        assert txn is not None
        conn = ctx.conn
        cfg = self.services.config.server
        parts: list[str] = []
        fired = {h.name for h in conn.hits}
        ip = conn.ip_str
        if conn.reverse_name:
            parts.append(method("iprev", "pass", [("policy.iprev", ip)], conn.reverse_name))
        elif fired & {"RDNS_NONE", "RDNS_NOT_FCRDNS"}:
            parts.append(method("iprev", "fail", [("policy.iprev", ip)]))
        elif "RDNS_TEMPERROR" in fired:
            parts.append(method("iprev", "temperror", [("policy.iprev", ip)]))
        spf: SpfResult | None = txn.notes.get("spf_result")
        if spf is not None:
            if spf.identity == "mailfrom":
                parts.append(method("spf", spf.result, [("smtp.mailfrom", txn.mail_from)]))
            else:
                parts.append(method("spf", spf.result, [("smtp.helo", spf.domain)]))
        if self.services.resolver is not None:
            if self._enabled("dkim") or self._enabled("dmarc"):
                sigs = await signatures(ctx, self.services)
                for s in sigs:
                    reason = s.reason if s.result != "pass" else ""
                    props = [("header.d", s.domain), ("header.s", s.selector), ("header.a", s.algorithm)]
                    parts.append(method("dkim", s.result, props, reason=reason[:100]))
                if not sigs:
                    parts.append(method("dkim", "none"))
            if self._enabled("dmarc") and not any(conn.ip in n for n in self.own):
                d = await dmarc_result(ctx, self.services)
                note = f"p={d.policy} dis={d.disposition}" if d.policy else ""
                parts.append(method("dmarc", d.result, [("header.from", d.from_domain)], note))
            if self._enabled("arc"):
                a = await arc_result(ctx, self.services)
                note = f"i={a.instance} sealer {a.sealer}" if a.sealer else ""
                parts.append(method("arc", a.result, [], note))
        header = render(cfg.authserv_id or cfg.hostname, parts)
        txn.notes.setdefault("add_headers", []).append((HEADER, header))
        return []
