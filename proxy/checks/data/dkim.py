"""DKIM (RFC 6376, RSA and Ed25519) at DATA: every signature is verified, not only the first.

Symbols (one each at most, evidence lists the signing domains):
``DKIM_PASS{d1,d2}``, ``DKIM_FAIL{d(reason)}``, ``DKIM_PERMERROR{d(reason)}``,
``DKIM_TEMPERROR{d}`` (key lookup failed; weight 0, ``on_temperror`` may defer) and
``DKIM_NONE`` (unsigned). A message signed by several domains can have both PASS and FAIL.

Keys are fetched first through the async resolver; verification (CPU work) then runs in the
DKIM family's own bounded thread pool (``threads``; a temperror per signature when every
thread stays busy for ``thread_wait``), or in a worker process for messages above ``process_pool_above`` (body
hashing holds the interpreter lock: a thread would still stall the event loop). The results
are shared with DMARC and the Authentication-Results header through :func:`signatures` (one
verification per message).
"""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import structlog

from proxy.auth import pools, procpool
from proxy.auth.dkim import DkimSignature, key_names, verify_prefetched
from proxy.auth.memo import once
from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.dnsutil import on_temperror_opt, temperror
from proxy.checks.options import BaseOptions
from proxy.config.fields import opt

log = structlog.get_logger("spamgate.dkim")

DKIM_PASS = SymbolDef(
    "DKIM_PASS",
    "A DKIM signature verified (evidence: the signing domains d=).",
    score=-0.2,
    remedy="Nothing to fix.",
)
DKIM_FAIL = SymbolDef(
    "DKIM_FAIL",
    "A DKIM signature did not verify: the message was changed after signing, or forged.",
    score=1.0,
    remedy="Sign after the last change to the message (footers, rewriting); check the published key "
    "matches the signing key.",
)
DKIM_PERMERROR = SymbolDef(
    "DKIM_PERMERROR",
    "A DKIM signature cannot be checked: no key published at the selector, malformed key or "
    "signature, key shorter than 1024 bits, unknown algorithm.",
    score=0.5,
    remedy="Publish the selector's key (TXT at <selector>._domainkey.<domain>) with a valid p= of at "
    "least 1024 bits.",
)
DKIM_TEMPERROR = SymbolDef(
    "DKIM_TEMPERROR",
    "A DKIM key lookup failed (timeout, SERVFAIL): neither pass nor fail.",
    score=0.0,
    remedy="Nothing unless your DNS servers fail; the receiving site retries.",
)
DKIM_NONE = SymbolDef(
    "DKIM_NONE",
    "The message carries no DKIM signature.",
    score=0.0,
    remedy="Sign your outgoing mail with DKIM (most mail servers and providers can).",
)


@dataclass(frozen=True, slots=True)
class DkimOptions(BaseOptions):
    max_signatures: int = opt(
        10, "Signatures verified per message (the rest are ignored): bounds the work.", minimum=1
    )
    min_key_bits: int = opt(1024, "RSA keys shorter than this are a permerror (RFC 8301).", minimum=512)
    process_pool_above: int = opt(
        "256K",
        "Messages this large are verified in a worker process (body hashing would hold the "
        "interpreter lock and stall the event loop); 0: always in a thread.",
        kind="size",
    )
    on_temperror: str = on_temperror_opt()
    threads: int = opt(
        2,
        "Threads of the DKIM pool (its own: no other check family waits behind it). A thread is "
        "busy until its job really ends, even when the stage budget gave up on it.",
        minimum=1,
    )
    thread_wait: float = opt(
        "1s",
        "When every DKIM thread is busy, how long a check waits for one before reporting "
        "DKIM_TEMPERROR (a prompt temperror, not a queue).",
        kind="duration",
    )


def _busy(names: list[str], why: str) -> list[DkimSignature]:
    """Every signature a temperror (no thread to verify them): DMARC sees which domains signed."""
    out = []
    for n in names:
        selector, _, domain = n.partition("._domainkey.")
        out.append(DkimSignature("temperror", domain, selector, reason=why))
    return out


async def signatures(ctx: CheckContext, services: Services) -> list[DkimSignature]:
    """The verified signatures of this message, computed once per transaction."""
    assert ctx.txn is not None
    opts: DkimOptions = services.config.checks["dkim"]
    resolver = services.resolver
    message = ctx.message

    async def compute() -> list[DkimSignature]:
        if resolver is None:
            return []
        names = key_names(message, opts.max_signatures)
        if not names:
            result: list[DkimSignature] = []
        else:
            # Keys are fetched here, asynchronously; the verification itself is pure CPU.
            answers = await asyncio.gather(*(resolver.lookup(n, "TXT") for n in names))
            keys = {n: (a.status, tuple(a.records)) for n, a in zip(names, answers, strict=True)}
            args = (message, keys, opts.max_signatures, opts.min_key_bits)
            big = opts.process_pool_above and len(message) >= opts.process_pool_above
            threads = pools.pool(services, "dkim")
            try:
                if big:
                    try:
                        result = await procpool.run(verify_prefetched, *args, wait=opts.thread_wait)
                    except BrokenProcessPool:
                        procpool.shutdown()
                        result = await threads.run(verify_prefetched, *args)
                else:
                    result = await threads.run(verify_prefetched, *args)
            except pools.Saturated as exc:
                result = _busy(names, str(exc))
            log.debug("dkim_verified", size=len(message), process=bool(big), signatures=len(result))
        ctx.txn.notes["dkim"] = result  # type: ignore[union-attr]
        return result

    return await once(ctx.txn.notes, "dkim_task", compute)


def _list(sigs: list[DkimSignature], reason: bool) -> str:
    seen: dict[str, None] = {}
    for s in sigs:
        seen[f"{s.domain}({s.reason})" if reason and s.reason else s.domain] = None
    return ",".join(seen)


class Dkim(Check):
    name = "dkim"
    stage = Stage.DATA
    symbols = (DKIM_PASS, DKIM_FAIL, DKIM_PERMERROR, DKIM_TEMPERROR, DKIM_NONE)
    Options = DkimOptions
    description = "DKIM signatures (RSA, Ed25519): every one verified, key lookups through [dns]."
    io = True

    async def stop(self) -> None:
        procpool.shutdown()

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if self.services.resolver is None:
            return []
        sigs = await signatures(ctx, self.services)
        if not sigs:
            return [DKIM_NONE.hit()]
        by: dict[str, list[DkimSignature]] = {}
        for s in sigs:
            by.setdefault(s.result, []).append(s)
        out: list[Symbol] = []
        if "pass" in by:
            out.append(DKIM_PASS.hit(_list(by["pass"], False)))
        if "fail" in by:
            out.append(DKIM_FAIL.hit(_list(by["fail"], True)))
        if "permerror" in by:
            out.append(DKIM_PERMERROR.hit(_list(by["permerror"], True)))
        if "temperror" in by:
            out += temperror(DKIM_TEMPERROR, _list(by["temperror"], False), self.options.on_temperror)
        return out
