"""DMARC (RFC 7489) at DATA: the From domain's policy applied to the SPF and DKIM results.

Policy discovery at ``_dmarc.<From domain>``, then at the organisational domain (Public Suffix
List); relaxed/strict alignment (adkim, aspf) of the SPF domain (``txn.notes["spf"]``, from the
``spf`` check at MAIL) and of *every* passing DKIM signature; p / sp / pct.

Symbols: ``DMARC_PASS{from:spf|dkim:domain}``; on failure, by the disposition the policy asks
(after pct sampling): ``DMARC_REJECT`` (forced ``550 5.7.1`` in rules), ``DMARC_QUARANTINE``
(forced tag: X-Spam-Flag, subject prefix), ``DMARC_FAIL`` (p=none: monitoring only); ``DMARC_FORWARDED``
instead when the client is a trusted forwarder (``trusted_forwarders``) or the message carries
a valid ARC chain sealed by one of ``trusted_arc_sealers`` (``arc_override``);
``DMARC_NONE`` (no policy, or no single From domain), ``DMARC_TEMPERROR`` (the policy lookup
failed, or no aligned pass while an aligned SPF or DKIM result is unknown: an SPF or DKIM
temperror, or no SPF result at all because the ``spf`` check is off or timed out; RFC 7489
needs both identities evaluated before a fail, so a DNS failure never becomes a 550).
Clients in ``relay.relay_networks`` are not checked. The result is ``txn.notes["dmarc"]``
(a :class:`~proxy.auth.dmarc.DmarcResult`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxy.auth.dmarc import DmarcResult, discover, evaluate, from_domain
from proxy.auth.memo import once
from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.data.arc import arc_result
from proxy.checks.data.dkim import signatures
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt
from proxy.dns.resolver import DnsResult

DMARC_PASS = SymbolDef(
    "DMARC_PASS",
    "The From domain is authenticated: SPF or DKIM passed for an aligned domain.",
    score=-0.5,
    remedy="Nothing to fix.",
)
DMARC_REJECT = SymbolDef(
    "DMARC_REJECT",
    "DMARC failed and the From domain's policy asks to reject (p=reject).",
    score=0.0,
    action="reject",
    reply="550 5.7.1 Email rejected per DMARC policy of the From domain",
    remedy="Authenticate the From domain: send through servers in its SPF record with an aligned "
    "MAIL FROM, or DKIM-sign with the From domain (d=).",
)
DMARC_QUARANTINE = SymbolDef(
    "DMARC_QUARANTINE",
    "DMARC failed and the From domain's policy asks to quarantine (p=quarantine): tagged as spam.",
    score=6.0,
    action="tag",
    remedy="Authenticate the From domain: aligned SPF or a DKIM signature with d= the From domain.",
)
DMARC_FAIL = SymbolDef(
    "DMARC_FAIL",
    "DMARC failed; the From domain only monitors (p=none, or outside the pct sample).",
    score=1.0,
    remedy="Authenticate the From domain: aligned SPF or a DKIM signature with d= the From domain.",
)
DMARC_FORWARDED = SymbolDef(
    "DMARC_FORWARDED",
    "DMARC failed but the message came through a trusted forwarder (by IP or trusted ARC sealer): "
    "not enforced.",
    score=0.0,
    remedy="Nothing to fix.",
)
DMARC_NONE = SymbolDef(
    "DMARC_NONE",
    "The From domain publishes no DMARC policy (or the message has no single From domain).",
    score=0.0,
    remedy="Publish a DMARC record (TXT at _dmarc.<domain>, 'v=DMARC1; p=none; rua=...') to start.",
)
DMARC_TEMPERROR = SymbolDef(
    "DMARC_TEMPERROR",
    "DMARC cannot be decided: the policy lookup failed (timeout, SERVFAIL), or nothing aligned "
    "passed while an aligned SPF or DKIM result is unknown (DNS failure, SPF not evaluated; "
    "evidence: from-domain:identity=result). Never a fail.",
    score=0.0,
    remedy="Nothing unless your DNS servers fail; the receiving site retries.",
)


@dataclass(frozen=True, slots=True)
class DmarcOptions(BaseOptions):
    trusted_forwarders: list[str] = opt(
        [],
        "Client networks whose mail is not held to DMARC (your own forwarders, list servers).",
        kind="cidrs",
    )
    trusted_arc_sealers: list[str] = opt(
        [],
        "ARC sealer domains (latest ARC-Seal d=) trusted to vouch for forwarded mail.",
    )
    arc_override: bool = opt(True, "A valid ARC chain sealed by a trusted sealer overrides a DMARC failure.")
    on_temperror: str = on_temperror_opt()


def spf_identity(ctx: CheckContext) -> tuple[str, str] | None:
    """The SPF result DMARC aligns: the ``spf`` check's ``(result, domain)``; when that check
    did not run or did not finish (disabled, MAIL stage timeout), ``("missing", domain)`` for
    the identity it would have checked (MAIL FROM domain, or the HELO name for the null
    sender): not a fail. None when there is no SPF identity (null sender, literal HELO)."""
    txn = ctx.txn
    assert txn is not None
    spf: tuple[str, str] | None = txn.notes.get("spf")
    if spf is not None:
        return spf
    if txn.mail_from:
        domain = txn.mail_from.rpartition("@")[2]
    else:
        domain = "" if ctx.conn.helo.startswith("[") else ctx.conn.helo
    domain = domain.strip().lower().rstrip(".")
    return ("missing", domain) if domain else None


async def dmarc_result(ctx: CheckContext, services: Services) -> DmarcResult:
    """The DMARC evaluation of this message, computed once per transaction."""
    txn = ctx.txn
    assert txn is not None
    resolver = services.resolver

    async def compute() -> DmarcResult:
        domain, problem = from_domain(ctx.message)
        if not domain:
            res = DmarcResult("none", "", detail=problem)
        else:

            async def txt(name: str) -> DnsResult:
                return await resolver.lookup(name, "TXT")  # type: ignore[no-any-return]

            found = await discover(domain, txt)
            dkim: list[tuple[str, str]] = []
            if found.status == "found":
                dkim = [(s.result, s.domain) for s in await signatures(ctx, services)]
            res = evaluate(domain, found, spf_identity(ctx), dkim)
        txn.notes["dmarc"] = res
        return res

    return await once(txn.notes, "dmarc_task", compute)


class Dmarc(Check):
    name = "dmarc"
    stage = Stage.DATA
    symbols = (
        DMARC_PASS,
        DMARC_REJECT,
        DMARC_QUARANTINE,
        DMARC_FAIL,
        DMARC_FORWARDED,
        DMARC_NONE,
        DMARC_TEMPERROR,
    )
    Options = DmarcOptions
    description = "DMARC (RFC 7489): From-domain policy over aligned SPF and DKIM results."
    io = True

    def __init__(self, options: DmarcOptions, services: Services) -> None:
        super().__init__(options, services)
        self.forwarders = [ipaddress.ip_network(n, strict=False) for n in options.trusted_forwarders]
        self.own = [ipaddress.ip_network(n, strict=False) for n in services.config.relay.relay_networks]
        self.sealers = frozenset(d.lower().rstrip(".") for d in options.trusted_arc_sealers)

    async def _forwarded(self, ctx: CheckContext) -> str:
        if any(ctx.conn.ip in n for n in self.forwarders):
            return f"ip:{ctx.conn.ip_str}"
        if self.options.arc_override and self.sealers:
            arc = await arc_result(ctx, self.services)
            if arc.result == "pass" and arc.sealer in self.sealers:
                return f"arc:{arc.sealer}"
        return ""

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if self.services.resolver is None or any(ctx.conn.ip in n for n in self.own):
            return []  # our own submission hosts (relay.relay_networks) are not held to DMARC
        res = await dmarc_result(ctx, self.services)
        d = res.from_domain
        if res.result == "pass":
            return [DMARC_PASS.hit(f"{d}:{res.aligned_by}")]
        if res.result == "temperror":
            evidence = f"{d}:{res.unknown}" if res.unknown else d
            return temperror(DMARC_TEMPERROR, evidence, self.options.on_temperror)
        if res.result == "none":
            return [DMARC_NONE.hit(d or res.detail)]
        if res.disposition in ("reject", "quarantine"):
            via = await self._forwarded(ctx)
            if via:
                return [DMARC_FORWARDED.hit(f"{d}:p={res.policy}:{via}")]
            sym = DMARC_REJECT if res.disposition == "reject" else DMARC_QUARANTINE
            return [sym.hit(d)]
        return [DMARC_FAIL.hit(f"{d}:p={res.policy}")]
