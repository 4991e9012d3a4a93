"""SPF (RFC 7208) evaluation with pyspf, its DNS served by a caller-supplied lookup function.

Contract:
- :func:`evaluate` is synchronous (pyspf is): run it in the bounded thread pool. It never
  raises; any pyspf crash (sdgathman/pyspf#39) is a ``permerror`` for malformed data or a
  ``temperror`` otherwise.
- DNS goes through ``lookup(name, rdtype) -> DnsResult`` (for :func:`evaluate`, a blocking
  lookup such as ``Resolver.lookup_blocking``; :func:`evaluate_async` serves answers it
  resolved beforehand), so ``[dns] nameservers`` drives SPF like every other check.
  A failed lookup (timeout, SERVFAIL) is pyspf's ``TempError`` -> ``temperror``; NXDOMAIN and
  NODATA are empty answers.
- pyspf calls the module global ``spf.DNSLookup``; :func:`evaluate` installs a dispatcher once
  and hands it the caller's lookup through a thread-local, so concurrent evaluations with
  different resolvers (tests) do not mix.
- :func:`evaluate_async` is what spamgate runs: **no thread ever waits for DNS**. pyspf runs
  (in a thread) against the answers known so far; the first lookup it needs that is not known
  stops that run, the missing names are resolved asynchronously, and pyspf runs again from
  the start, until a run needs nothing new. Each run is a fraction of a millisecond of CPU; a
  slow or dead DNS server costs the check's own time budget, never a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import spf

from proxy.dns.resolver import DnsResult

Lookup = Callable[[str, str], DnsResult]
AsyncLookup = Callable[[str, str], Awaitable[DnsResult]]
Runner = Callable[..., Awaitable[Any]]
MAX_ROUNDS = 200  # distinct lookups of one evaluation: 10 terms x 10 MX/PTR names, and margin

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
_local = threading.local()
_installed = False
_install_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # one of RESULTS
    domain: str  # the domain whose policy was checked (MAIL FROM domain or HELO name)
    identity: str  # "mailfrom" or "helo"
    explanation: str = ""


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    lookup: Lookup | None = getattr(_local, "lookup", None)
    if lookup is None:
        raise spf.TempError("DNS: no resolver bound to this thread")
    if qtype not in ("A", "AAAA", "MX", "PTR", "TXT", "CNAME"):
        return []  # type SPF (99) is obsolete (RFC 7208 3.1); never asked in strict=True mode
    res = lookup(name, qtype)
    if res.failed:
        raise spf.TempError(f"DNS {res.status} {name} {qtype}")
    out: list[Any] = []
    for rec in res.records:
        if qtype == "TXT":
            value: Any = (rec.encode("utf-8", "surrogateescape"),)
        else:
            value = rec
        out.append(((name, qtype), value))
    return out


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            spf.DNSLookup = _dispatch
            _installed = True


def evaluate(
    ip: str,
    mail_from: str,
    helo: str,
    lookup: Lookup,
    *,
    identity: str = "mailfrom",
    querytime: float = 20.0,
    receiver: str = "",
) -> SpfResult:
    """Evaluate the SPF policy of the MAIL FROM domain (``identity="mailfrom"``) or, for the
    null sender or on request, of the HELO name (``identity="helo"``)."""
    _install()
    identity, sender, domain = identity_of(mail_from, helo, identity)
    _local.lookup = lookup
    try:
        q = spf.query(i=ip, s=sender, h=helo, receiver=receiver or None, querytime=querytime)
        result, _code, expl = q.check()
    except spf.TempError as exc:
        return SpfResult("temperror", domain, identity, str(exc))
    except (IndexError, ValueError, UnicodeError) as exc:
        return SpfResult("permerror", domain, identity, repr(exc))
    except Exception as exc:  # pyspf is old; never let it take the check down
        return SpfResult("temperror", domain, identity, repr(exc))
    finally:
        _local.lookup = None
    result = str(result).lower()
    if result not in RESULTS:
        result = "permerror" if result == "ambiguous" else "neutral"
    return SpfResult(result, domain, identity, str(expl or ""))


def identity_of(mail_from: str, helo: str, identity: str = "mailfrom") -> tuple[str, str, str]:
    """(identity, sender checked, domain): the MAIL FROM, or ``postmaster@<helo>`` for the
    HELO identity (asked for, or the null sender)."""
    if identity == "helo" or not mail_from:
        identity, sender = "helo", f"postmaster@{helo}"
    else:
        sender = mail_from
    return identity, sender, sender.rpartition("@")[2].lower().rstrip(".")


class _Unknown(spf.TempError):  # type: ignore[misc]
    """A lookup whose answer is not known yet: ends this run (pyspf reads it as a TempError;
    the run's result is discarded anyway)."""


def _attempt(
    job: Callable[[Lookup], SpfResult],
    known: dict[tuple[str, str], DnsResult],
    needed: list[tuple[str, str]],
) -> SpfResult:
    def lookup(name: str, rdtype: str) -> DnsResult:
        key = (name.lower().rstrip("."), rdtype)
        got = known.get(key)
        if got is None:
            needed.append(key)  # recorded even if pyspf swallows the exception
            raise _Unknown(f"not yet resolved: {name} {rdtype}")
        return got

    return job(lookup)


async def evaluate_async(
    ip: str,
    mail_from: str,
    helo: str,
    lookup: AsyncLookup,
    run: Runner,
    *,
    identity: str = "mailfrom",
    querytime: float = 20.0,
    receiver: str = "",
) -> SpfResult:
    """:func:`evaluate` without a thread waiting for DNS: ``run(fn, *args)`` runs pyspf (a
    bounded thread pool), ``lookup`` is the async resolver. Bound it with a timeout: each DNS
    round waits for its lookups (the resolver's own timeouts apply)."""
    known: dict[tuple[str, str], DnsResult] = {}
    job = functools.partial(
        evaluate, ip, mail_from, helo, identity=identity, querytime=querytime, receiver=receiver
    )
    for _ in range(MAX_ROUNDS):
        needed: list[tuple[str, str]] = []
        result: SpfResult = await run(_attempt, job, known, needed)
        if not needed:
            return result
        names = list(dict.fromkeys(needed))
        answers = await asyncio.gather(*(lookup(n, t) for n, t in names))
        known.update(zip(names, answers, strict=True))
    ident, _, domain = identity_of(mail_from, helo, identity)
    return SpfResult("temperror", domain, ident, f"more than {MAX_ROUNDS} DNS lookups")
