"""DMARC (RFC 7489): record parsing, organisational domain, alignment, evaluation.

Pure logic; the DNS discovery (``_dmarc.<From domain>``, then ``_dmarc.<org domain>``) is done
by the caller with :func:`discover`, which takes an async TXT lookup.

- Organisational domain: the Public Suffix List (``publicsuffixlist``, bundled and current):
  the registrable domain (``privatesuffix``). A bare public suffix has none, so it never aligns.
- Alignment: strict = same name; relaxed = same organisational domain.
- DMARC passes when SPF passed for an aligned domain or *any* DKIM signature passed for an
  aligned domain (every signature counts, not only the first). It fails only when every
  aligned identity has a definite result; an aligned SPF or DKIM result that is unknown
  (temperror, SPF not evaluated) makes it a temperror instead (see :func:`evaluate`).
- Disposition on failure: ``p`` (``sp`` when the policy was found at the organisational domain
  for a subdomain), sampled by ``pct``: a message outside the sample gets the next weaker
  policy (reject -> quarantine -> none), RFC 7489 6.6.4.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from proxy.dns.resolver import DnsResult

POLICIES = ("none", "quarantine", "reject")
_psl: PublicSuffixList | None = None


def psl() -> PublicSuffixList:
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    return _psl


def org_domain(domain: str) -> str | None:
    """The organisational (registrable) domain, None for a public suffix or an invalid name."""
    domain = domain.lower().rstrip(".")
    if not domain:
        return None
    result: str | None = psl().privatesuffix(domain)
    return result


def aligned(auth_domain: str, from_domain: str, mode: str) -> bool:
    a, f = auth_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not a or not f:
        return False
    if mode == "s":
        return a == f
    oa = org_domain(a)
    return oa is not None and oa == org_domain(f)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    raw: str = ""


_TAG_RE = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


@functools.lru_cache(maxsize=4096)  # records repeat (one per sending domain); results are immutable
def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record, or None when it is not one (RFC 7489 6.6.3: v=DMARC1 must come first).

    An invalid or missing ``p`` with otherwise valid tags is read as ``p=none``."""
    tags: dict[str, str] = {}
    parts = [p for p in text.split(";") if p.strip()]
    for i, part in enumerate(parts):
        m = _TAG_RE.match(part)
        if m is None:
            if i == 0:
                return None
            continue
        k, v = m.group(1).lower(), m.group(2)
        if i == 0 and (k != "v" or v != "DMARC1"):
            return None
        tags.setdefault(k, v)
    if tags.get("v") != "DMARC1":
        return None
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        p = "none"
    sp = tags.get("sp", "").lower()
    if sp not in POLICIES:
        sp = p
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(p, sp, adkim, aspf, pct, text.strip())


@dataclass(frozen=True, slots=True)
class Discovery:
    status: str  # "found" | "none" | "temperror"
    record: DmarcRecord | None = None
    at: str = ""  # the domain whose _dmarc record was used
    detail: str = ""


TxtLookup = Callable[[str], Awaitable[DnsResult]]


async def _fetch(domain: str, txt: TxtLookup) -> Discovery:
    res = await txt(f"_dmarc.{domain}")
    if res.failed:
        return Discovery("temperror", detail=f"_dmarc.{domain}: {res.status}")
    if not res.ok:
        return Discovery("none", detail=f"_dmarc.{domain}: {res.status}")
    records = [str(r) for r in res.records if str(r).lstrip().startswith("v=DMARC1")]
    if len(records) != 1:
        return Discovery("none", detail=f"_dmarc.{domain}: {len(records)} records")
    rec = parse_record(records[0])
    if rec is None:
        return Discovery("none", detail=f"_dmarc.{domain}: invalid")
    return Discovery("found", rec, domain)


async def discover(from_domain: str, txt: TxtLookup) -> Discovery:
    """RFC 7489 6.6.3: the From domain's record, else the organisational domain's."""
    first = await _fetch(from_domain, txt)
    if first.status != "none":
        return first
    org = org_domain(from_domain)
    if org is None or org == from_domain:
        return first
    return await _fetch(org, txt)


def from_domain(message: bytes) -> tuple[str, str]:
    """(domain, problem): the RFC5322.From domain, or '' with why it cannot be used."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields: list[str] = []
    lines = head.split("\r\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        name, sep, value = line.partition(":")
        i += 1
        while i < len(lines) and lines[i][:1] in (" ", "\t"):
            value += lines[i]
            i += 1
        if sep and name.strip().lower() == "from":
            fields.append(value)
    if not fields:
        return "", "no-from"
    if len(fields) > 1:
        return "", "multiple-from"
    addrs = getaddresses(fields)
    domains = {addr.rpartition("@")[2].strip().strip(">").lower().rstrip(".") for _, addr in addrs}
    domains.discard("")
    if len(domains) != 1:
        return "", "no-from-domain" if not domains else "multiple-from-domains"
    domain = domains.pop()
    if not domain.isascii():  # an internationalised From domain compares in its A-label form
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return "", "bad-from-domain"
    return domain, ""


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # "pass" | "fail" | "none" | "temperror"
    from_domain: str
    policy: str = ""  # the published policy that applies (p or sp)
    disposition: str = "none"  # what the policy asks for this message, after pct
    aligned_by: str = ""  # "spf:domain" / "dkim:domain" when passing
    detail: str = ""
    unknown: str = ""  # temperror by an unknown identity: "spf:domain=temperror,dkim:domain=temperror"


UNKNOWN = ("temperror", "missing")  # an identity that was not evaluated to a definite result


def evaluate(
    domain: str,
    found: Discovery,
    spf: tuple[str, str] | None,
    dkim: Iterable[tuple[str, str]],
    *,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC result of a message from ``domain``.

    ``spf`` is ``(result, domain)`` of the SPF identity (MAIL FROM domain, or HELO name for the
    null sender); ``result`` is ``"missing"`` when SPF was not evaluated (check off, stage
    timeout); None when the message has no SPF identity at all. ``dkim`` is ``(result, d=)``
    of every verified signature.

    A fail needs every identity that could have given an aligned pass to be known (RFC 7489
    4.2: both evaluated): when nothing aligned passed and an *aligned* SPF or DKIM identity is
    ``temperror`` or ``missing``, the result is ``temperror``, never ``fail`` (a DNS failure
    must not turn into a rejection). An unknown identity that is not aligned could not have
    passed DMARC, so it does not hold the fail back (else forging MAIL FROM with a dead-DNS
    domain would defeat ``p=reject``)."""
    if found.status == "temperror":
        return DmarcResult("temperror", domain, detail=found.detail)
    rec = found.record
    if found.status != "found" or rec is None:
        return DmarcResult("none", domain, detail=found.detail)
    policy = rec.sp if found.at != domain else rec.p
    unknown: list[str] = []
    for result, d in dkim:
        if aligned(d, domain, rec.adkim):
            if result == "pass":
                return DmarcResult("pass", domain, policy, "none", f"dkim:{d}")
            if result in UNKNOWN:
                unknown.append(f"dkim:{d}={result}")
    if spf is not None and aligned(spf[1], domain, rec.aspf):
        if spf[0] == "pass":
            return DmarcResult("pass", domain, policy, "none", f"spf:{spf[1]}")
        if spf[0] in UNKNOWN:
            unknown.insert(0, f"spf:{spf[1]}={spf[0]}")
    if unknown:
        unique = ",".join(dict.fromkeys(unknown))
        return DmarcResult("temperror", domain, policy, "none", detail=f"p={policy} {unique}", unknown=unique)
    disposition = policy
    if rec.pct < 100 and sample() * 100 >= rec.pct:
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult("fail", domain, policy, disposition, detail=f"p={policy} pct={rec.pct}")
