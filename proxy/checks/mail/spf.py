"""SPF (RFC 7208) at MAIL: the MAIL FROM domain's policy, or the HELO name's for the null sender.

One symbol per result (``SPF_PASS`` ... ``SPF_PERMERROR``), evidence ``domain`` (``helo:domain``
for the HELO identity). ``SPF_FAIL`` rejects by default with ``550 5.7.23`` (forced action in
``rules/20-auth.toml``). ``SPF_TEMPERROR`` is weight 0; ``on_temperror = "tempfail"`` also
emits ``DNS_TEMPFAIL`` (451, the sender retries).

The result is stored as ``txn.notes["spf"] = (result, domain)`` (DMARC, greylisting and the
Authentication-Results header read it) and the full :class:`~proxy.auth.spf.SpfResult` as
``txn.notes["spf_result"]``. With ``check_helo`` the HELO identity is also evaluated for a
non-null sender (``txn.notes["spf_helo"]``, ``SPF_HELO_FAIL`` when it fails).

Clients in ``relay.relay_networks`` (your own submission hosts) are not checked.

pyspf is synchronous: it runs in the SPF family's own bounded thread pool (``threads``,
:mod:`proxy.auth.pools`), but never waits for DNS there: :func:`~proxy.auth.spf.evaluate_async`
resolves what pyspf asks for through the async resolver (the ``[dns]`` nameservers, cache and
timeouts) and re-runs it, so a dead DNS server costs this check's ``timeout``, not a thread.
When every SPF thread stays busy for ``thread_wait``, the result is a temperror at once.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from dataclasses import dataclass

from proxy.auth import pools
from proxy.auth.spf import SpfResult, evaluate_async, identity_of
from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

SPF_PASS = SymbolDef(
    "SPF_PASS",
    "The client is authorised by the sender domain's SPF record.",
    score=-0.5,
    remedy="Nothing to fix.",
)
SPF_FAIL = SymbolDef(
    "SPF_FAIL",
    "The sender domain's SPF record says this client must not send its mail (-all).",
    score=6.0,
    action="reject",
    reply="550 5.7.23 SPF validation failed: client not authorized by sender domain",
    remedy="Send through a server listed in your domain's SPF record, or add this server to it.",
)
SPF_SOFTFAIL = SymbolDef(
    "SPF_SOFTFAIL",
    "The sender domain's SPF record says this client is probably not authorised (~all).",
    score=2.0,
    remedy="Send through a server listed in your domain's SPF record, or add this server to it.",
)
SPF_NEUTRAL = SymbolDef(
    "SPF_NEUTRAL",
    "The sender domain's SPF record makes no statement about this client (?all).",
    score=0.5,
    remedy="Publish an SPF record that lists your servers and ends in ~all or -all.",
)
SPF_NONE = SymbolDef(
    "SPF_NONE",
    "The sender domain publishes no SPF record.",
    score=1.0,
    remedy="Publish an SPF record (TXT 'v=spf1 ... -all') for the sending domain.",
)
SPF_TEMPERROR = SymbolDef(
    "SPF_TEMPERROR",
    "The SPF record could not be evaluated because of a DNS failure (timeout, SERVFAIL).",
    score=0.0,
    remedy="Nothing unless your DNS servers fail; the receiving site retries its lookups.",
)
SPF_PERMERROR = SymbolDef(
    "SPF_PERMERROR",
    "The sender domain's SPF record is broken (syntax, more than 10 lookups, several records).",
    score=1.5,
    remedy="Fix the SPF record: one 'v=spf1' TXT record, valid syntax, at most 10 DNS-querying terms.",
)
SPF_HELO_FAIL = SymbolDef(
    "SPF_HELO_FAIL",
    "The HELO name's SPF record says this client must not use it (checks.spf.check_helo).",
    score=3.0,
    remedy="Use a HELO name whose SPF record lists this server (v=spf1 a -all on the host name).",
)

BY_RESULT = {
    "pass": SPF_PASS,
    "fail": SPF_FAIL,
    "softfail": SPF_SOFTFAIL,
    "neutral": SPF_NEUTRAL,
    "none": SPF_NONE,
    "temperror": SPF_TEMPERROR,
    "permerror": SPF_PERMERROR,
}


@dataclass(frozen=True, slots=True)
class SpfOptions(BaseOptions):
    check_helo: bool = opt(
        False, "Also evaluate the HELO name's SPF for a non-null sender (SPF_HELO_FAIL when it fails)."
    )
    timeout: float = opt(
        "8s",
        "Budget of one SPF evaluation (all its DNS lookups); beyond it the result is temperror.",
        kind="duration",
    )
    on_temperror: str = on_temperror_opt()
    cache_ttl: float = opt(
        "60s",
        "How long a result is reused for the same client IP, sender and HELO (a sender's next "
        "message skips re-evaluation); temperrors are never reused; 0: off.",
        kind="duration",
    )
    cache_size: int = opt(10000, "Results kept for reuse per worker (LRU).", minimum=0)
    threads: int = opt(
        4,
        "Threads of the SPF pool (its own: no other check family waits behind it). A thread is "
        "busy until its job really ends, even when the stage budget gave up on it.",
        minimum=1,
    )
    thread_wait: float = opt(
        "1s",
        "When every SPF thread is busy, how long a check waits for one before reporting "
        "SPF_TEMPERROR (a prompt temperror, not a queue).",
        kind="duration",
    )


class Spf(Check):
    name = "spf"
    stage = Stage.MAIL
    symbols = (
        SPF_PASS,
        SPF_FAIL,
        SPF_SOFTFAIL,
        SPF_NEUTRAL,
        SPF_NONE,
        SPF_TEMPERROR,
        SPF_PERMERROR,
        SPF_HELO_FAIL,
    )
    Options = SpfOptions
    description = "SPF (RFC 7208) of the MAIL FROM domain, or of the HELO name for the null sender."
    io = True

    def __init__(self, options: SpfOptions, services: Services) -> None:
        super().__init__(options, services)
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in services.config.relay.relay_networks]
        self._cache: collections.OrderedDict[tuple[str, str, str, str], tuple[float, SpfResult]] = (
            collections.OrderedDict()
        )

    async def _evaluate(self, ip: str, mail_from: str, helo: str, identity: str) -> SpfResult:
        """pyspf's verdict, reused for ``cache_ttl``: the same client, sender and HELO give the
        same result while the DNS answers behind it are cached anyway, and reusing it saves
        the thread-pool round trip on a repeat sender's every message."""
        o: SpfOptions = self.options
        key = (ip, mail_from.lower(), helo.lower(), identity)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
            del self._cache[key]
        result = await self._run_pyspf(ip, mail_from, helo, identity)
        if o.cache_ttl > 0 and o.cache_size > 0 and result.result != "temperror":
            self._cache[key] = (now + o.cache_ttl, result)
            while len(self._cache) > o.cache_size:
                self._cache.popitem(last=False)
        return result

    async def _run_pyspf(self, ip: str, mail_from: str, helo: str, identity: str) -> SpfResult:
        resolver = self.services.resolver
        o: SpfOptions = self.options
        try:
            async with asyncio.timeout(o.timeout):
                return await evaluate_async(
                    ip,
                    mail_from,
                    helo,
                    resolver.lookup,
                    pools.pool(self.services, "spf").run,
                    identity=identity,
                    querytime=o.timeout,
                    receiver=self.services.config.server.hostname,
                )
        except (TimeoutError, pools.Saturated) as exc:
            ident, _, domain = identity_of(mail_from, helo, identity)
            why = str(exc) or f"evaluation exceeded {o.timeout:g}s"
            return SpfResult("temperror", domain, ident, why)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        txn = ctx.txn
        assert txn is not None
        if self.services.resolver is None or any(ctx.conn.ip in n for n in self.trusted):
            return []  # our own submission hosts (relay.relay_networks) are not checked
        ip = ctx.conn.ip_str
        helo = "" if ctx.conn.helo.startswith("[") else ctx.conn.helo  # a literal has no SPF
        mail_from = txn.mail_from
        if not mail_from and not helo:
            return []
        o: SpfOptions = self.options
        res = await self._evaluate(ip, mail_from, helo, "mailfrom" if mail_from else "helo")
        txn.notes["spf"] = (res.result, res.domain)
        txn.notes["spf_result"] = res
        evidence = res.domain if res.identity == "mailfrom" else f"helo:{res.domain}"
        out: list[Symbol]
        if res.result == "temperror":
            out = temperror(SPF_TEMPERROR, evidence, o.on_temperror)
        else:
            out = [BY_RESULT[res.result].hit(evidence)]
        if o.check_helo and mail_from and helo:
            hres = await self._evaluate(ip, "", helo, "helo")
            txn.notes["spf_helo"] = hres
            if hres.result == "fail":
                out.append(SPF_HELO_FAIL.hit(hres.domain))
        return out
