"""ARC (RFC 8617) chain validation with dkimpy's ``arc_verify``.

Contract:
- :func:`validate` is synchronous (dkimpy's ARC is sync only): run it in the bounded thread pool
  or the process pool. Keys come from ``txt(name) -> DnsResult`` (normally prefetched with the
  async resolver: :func:`arc_key_names`, :func:`validate_prefetched`); a failed lookup gives
  ``temperror`` (dkimpy would read it as an invalid signature). It never raises.
- Result: ``pass`` (every ARC set valid, latest ``cv`` pass), ``fail`` (a broken chain or a
  seal that says fail), ``none`` (no ARC headers), ``temperror``.
- Bounded: a chain of more than ``max_sets`` ARC sets (RFC 8617 allows 50, each with two keys
  to fetch and two signatures to verify) is not verified at all: ``fail`` with
  ``too_long=True`` (:func:`count_sets` counts them from the header alone, before any key is
  fetched or any signature checked).
- ``sealer`` is the ``d=`` of the most recent ARC-Seal (highest instance): the forwarder that
  vouches for the chain, matched against ``trusted_arc_sealers`` by DMARC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim

from proxy.auth.dkim import TxtLookup, _dnsfunc, _DnsTempError, _Log, _text, key_names, prefetched

ARC_SIGNATURES = ("arc-seal", "arc-message-signature")
ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*([0-9]+)")


@dataclass(frozen=True, slots=True)
class ArcResult:
    result: str  # "pass" | "fail" | "none" | "temperror"
    sealer: str = ""  # d= of the latest ARC-Seal
    instance: int = 0  # the latest instance (i=)
    reason: str = ""
    too_long: bool = False  # more ARC sets than allowed: refused, not verified


def count_sets(message: bytes) -> int:
    """How many ARC sets the header claims: the most fields of one ARC kind, or the highest
    instance ``i=`` any ARC field names, whichever is larger (a forged ``i=1000`` counts)."""
    head = message.split(b"\r\n\r\n", 1)[0]
    counts = dict.fromkeys(ARC_FIELDS, 0)
    highest = 0
    for field in re.split(rb"\r\n(?![ \t])", head):
        name, sep, value = field.partition(b":")
        kind = name.strip().lower()
        if not sep or kind not in counts:
            continue
        counts[kind] += 1
        m = _INSTANCE.search(value)
        if m:
            highest = max(highest, int(m.group(1)[:6]))
    return max(highest, *counts.values())


def too_long(message: bytes, max_sets: int) -> ArcResult | None:
    """The refusal for a chain of more than ``max_sets`` sets, else None."""
    n = count_sets(message)
    if n <= max_sets:
        return None
    return ArcResult("fail", instance=n, reason=f"{n} ARC sets > max_sets {max_sets}", too_long=True)


def has_arc(message: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return b"\r\narc-seal:" in b"\r\n" + head


def validate(message: bytes, txt: TxtLookup, *, minkey: int = 1024, max_sets: int = 10) -> ArcResult:
    if not has_arc(message):
        return ArcResult("none")
    refused = too_long(message, max_sets)
    if refused is not None:
        return refused
    try:
        cv, results, reason = dkim.arc_verify(message, logger=_Log(), dnsfunc=_dnsfunc(txt), minkey=minkey)
    except _DnsTempError as exc:
        return ArcResult("temperror", reason=f"key lookup {exc}")
    except Exception as exc:
        return ArcResult("fail", reason=f"{type(exc).__name__}: {exc}"[:200])
    latest = max(results, key=lambda r: int(r.get("instance", 0)), default=None)
    sealer = _text(latest.get("as-domain")).lower() if latest else ""
    instance = int(latest.get("instance", 0)) if latest else 0
    result = _text(cv).lower() if cv is not None else "fail"
    if result not in ("pass", "fail", "none"):
        result = "fail"
    return ArcResult(result, sealer, instance, _text(reason)[:200])


def arc_key_names(message: bytes, max_sets: int = 10) -> list[str]:
    """The sealing and signing keys the ARC chain needs (fetched before :func:`validate_prefetched`):
    at most two per allowed set."""
    return key_names(message, 2 * max_sets, ARC_SIGNATURES)


def validate_prefetched(
    message: bytes, keys: dict[str, tuple[str, tuple[str, ...]]], max_sets: int = 10
) -> ArcResult:
    """:func:`validate` with keys fetched beforehand; picklable: runs in a worker process too."""
    return validate(message, prefetched(keys), max_sets=max_sets)
