"""ARC (RFC 8617) chain validation with dkimpy's ``arc_verify``.

Contract:
- :func:`validate` is synchronous (dkimpy's ARC is sync only): run it in the bounded thread pool
  or the process pool. Keys come from ``txt(name) -> DnsResult`` (normally prefetched with the
  async resolver: :func:`arc_key_names`, :func:`validate_prefetched`); a failed lookup gives
  ``temperror`` (dkimpy would read it as an invalid signature). It never raises.
- Result: ``pass`` (every ARC set valid, latest ``cv`` pass), ``fail`` (a broken chain or a
  seal that says fail), ``none`` (no ARC headers), ``temperror``.
- ``sealer`` is the ``d=`` of the most recent ARC-Seal (highest instance): the forwarder that
  vouches for the chain, matched against ``trusted_arc_sealers`` by DMARC.
"""

from __future__ import annotations

from dataclasses import dataclass

import dkim

from proxy.auth.dkim import TxtLookup, _dnsfunc, _DnsTempError, _Log, _text, key_names, prefetched

ARC_SIGNATURES = ("arc-seal", "arc-message-signature")


@dataclass(frozen=True, slots=True)
class ArcResult:
    result: str  # "pass" | "fail" | "none" | "temperror"
    sealer: str = ""  # d= of the latest ARC-Seal
    instance: int = 0  # the latest instance (i=)
    reason: str = ""


def has_arc(message: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return b"\r\narc-seal:" in b"\r\n" + head


def validate(message: bytes, txt: TxtLookup, *, minkey: int = 1024) -> ArcResult:
    if not has_arc(message):
        return ArcResult("none")
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


def arc_key_names(message: bytes, limit: int = 100) -> list[str]:
    """The sealing and signing keys the ARC chain needs (fetched before :func:`validate_prefetched`)."""
    return key_names(message, limit, ARC_SIGNATURES)


def validate_prefetched(message: bytes, keys: dict[str, tuple[str, tuple[str, ...]]]) -> ArcResult:
    """:func:`validate` with keys fetched beforehand; picklable: runs in a worker process too."""
    return validate(message, prefetched(keys))
