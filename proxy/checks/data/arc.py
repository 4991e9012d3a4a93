"""ARC (RFC 8617) at DATA: validate the chain a forwarder (mailing list, forwarding service)
sealed, and record the result.

``ARC_PASS{sealer:i=N}`` (the chain is intact; the sealer is the latest ARC-Seal's d=),
``ARC_FAIL{reason}``, ``ARC_TOO_LONG{sets}`` (more than ``max_sets`` ARC sets: refused before
any key is fetched), ``ARC_NONE`` (no ARC headers), ``ARC_TEMPERROR`` (key lookup failed, or
every ARC thread busy for ``thread_wait``).
By itself ARC only informs; a pass from one of ``[checks.dmarc] trusted_arc_sealers``
overrides a DMARC failure (``DMARC_FORWARDED``). Keys are prefetched through the async
resolver, then the chain is verified in the ARC family's own thread pool (in the worker process above
``[checks.dkim] process_pool_above``); the result
is shared with DMARC and the Authentication-Results header (:func:`arc_result`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from proxy.auth import pools, procpool
from proxy.auth.arc import ArcResult, arc_key_names, has_arc, too_long, validate_prefetched
from proxy.auth.memo import once
from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

ARC_PASS = SymbolDef(
    "ARC_PASS",
    "The message's ARC chain validates (evidence: the latest sealer and instance).",
    score=0.0,
    remedy="Nothing to fix.",
)
ARC_FAIL = SymbolDef(
    "ARC_FAIL",
    "The message's ARC chain is broken: a seal or message signature does not verify.",
    score=0.5,
    remedy="Forwarders: seal after your last change to the message and publish the sealing key.",
)
ARC_NONE = SymbolDef(
    "ARC_NONE",
    "The message has no ARC headers (not forwarded by an ARC-sealing intermediary).",
    score=0.0,
    remedy="Nothing to fix.",
)
ARC_TOO_LONG = SymbolDef(
    "ARC_TOO_LONG",
    "The message claims more ARC sets than [checks.arc] max_sets: the chain is not verified "
    "(no key fetched) and counts as broken (evidence: the number of sets).",
    score=0.5,
    remedy="Forwarders: real chains have a few hops; do not re-seal a message in a loop.",
)
ARC_TEMPERROR = SymbolDef(
    "ARC_TEMPERROR",
    "An ARC key lookup failed (timeout, SERVFAIL).",
    score=0.0,
    remedy="Nothing unless the sealer's DNS fails; the receiving site retries.",
)


@dataclass(frozen=True, slots=True)
class ArcOptions(BaseOptions):
    on_temperror: str = on_temperror_opt()
    max_sets: int = opt(
        10,
        "Longest ARC chain verified (RFC 8617 allows 50 sets, two key lookups and signatures "
        "each); a longer one is ARC_TOO_LONG, refused before any key is fetched.",
        minimum=1,
    )
    threads: int = opt(
        2,
        "Threads of the ARC pool (its own: no other check family waits behind it). A thread is "
        "busy until its job really ends, even when the stage budget gave up on it.",
        minimum=1,
    )
    thread_wait: float = opt(
        "1s",
        "When every ARC thread is busy, how long a check waits for one before reporting "
        "ARC_TEMPERROR (a prompt temperror, not a queue).",
        kind="duration",
    )


async def arc_result(ctx: CheckContext, services: Services) -> ArcResult:
    """The ARC validation of this message, computed once per transaction."""
    assert ctx.txn is not None
    resolver = services.resolver
    message = ctx.message
    opts: ArcOptions = services.config.checks["arc"]

    async def compute() -> ArcResult:
        if resolver is None or not has_arc(message):
            res = ArcResult("none")
        elif (refused := too_long(message, opts.max_sets)) is not None:
            res = refused  # counted from the header: no key fetched, nothing verified
        else:
            names = arc_key_names(message, opts.max_sets)
            answers = await asyncio.gather(*(resolver.lookup(n, "TXT") for n in names))
            keys = {n: (a.status, tuple(a.records)) for n, a in zip(names, answers, strict=True)}
            dkim_opts = services.config.checks["dkim"]
            big = dkim_opts.process_pool_above and len(message) >= dkim_opts.process_pool_above
            args = (message, keys, opts.max_sets)
            threads = pools.pool(services, "arc")
            try:
                if big:
                    try:
                        res = await procpool.run(validate_prefetched, *args, wait=opts.thread_wait)
                    except BrokenProcessPool:
                        procpool.shutdown()
                        res = await threads.run(validate_prefetched, *args)
                else:
                    res = await threads.run(validate_prefetched, *args)
            except pools.Saturated as exc:
                res = ArcResult("temperror", reason=str(exc))
        ctx.txn.notes["arc"] = res  # type: ignore[union-attr]
        return res

    return await once(ctx.txn.notes, "arc_task", compute)


class Arc(Check):
    name = "arc"
    stage = Stage.DATA
    symbols = (ARC_PASS, ARC_FAIL, ARC_TOO_LONG, ARC_NONE, ARC_TEMPERROR)
    Options = ArcOptions
    description = "ARC chain validation (RFC 8617) with dkimpy."
    io = True

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        res = await arc_result(ctx, self.services)
        if res.result == "pass":
            return [ARC_PASS.hit(f"{res.sealer}:i={res.instance}")]
        if res.too_long:
            return [ARC_TOO_LONG.hit(str(res.instance))]
        if res.result == "fail":
            return [ARC_FAIL.hit(res.reason[:80])]
        if res.result == "temperror":
            return temperror(ARC_TEMPERROR, res.reason[:80], self.options.on_temperror)
        return [ARC_NONE.hit()]
