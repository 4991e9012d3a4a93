"""DKIM (RFC 6376; RSA and Ed25519 per RFC 8463) verification of every signature with dkimpy.

Contract:
- :func:`verify_all` is synchronous (dkimpy is, and body canonicalisation is CPU work): run it
  in the bounded thread pool. It verifies *every* DKIM-Signature (up to ``max_signatures``),
  not only the first, and never raises.
- Keys come from ``txt(name) -> DnsResult``: spamgate fetches them asynchronously first and
  verifies against those answers (:func:`verify_prefetched`), so no thread waits for DNS.
  A failed lookup (timeout, SERVFAIL) gives ``temperror`` for that signature, distinct from
  ``fail``; dkimpy would swallow it as False, so the DNS hook raises an exception dkimpy does
  not catch.
- Per signature: ``pass``; ``fail`` (bad signature or body hash); ``permerror`` (no key,
  malformed key or signature header, key too small, unknown algorithm); ``temperror``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim

from proxy.dns.resolver import DnsResult

TxtLookup = Callable[[str], DnsResult]


@dataclass(frozen=True, slots=True)
class DkimSignature:
    result: str  # "pass" | "fail" | "permerror" | "temperror"
    domain: str  # d=
    selector: str  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    reason: str = ""


class _DnsTempError(Exception):
    """Raised from the DNS hook on a failed lookup; not a DKIMException, so dkimpy lets it out."""


class _Log:
    """A dkimpy logger that keeps the errors (dkimpy reports key problems only through it)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, msg: Any, *a: Any) -> None:
        self.errors.append(str(msg))

    def debug(self, *a: Any, **k: Any) -> None:
        pass

    info = warning = debug


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _dnsfunc(txt: TxtLookup) -> Callable[..., bytes | None]:
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        res = txt(name.decode("ascii", "replace").rstrip("."))
        if res.failed:
            raise _DnsTempError(f"{res.status} {name.decode('ascii', 'replace')}")
        if not res.ok:
            return None
        keys = [r for r in res.records if "p=" in r] or list(res.records)
        return str(keys[0]).encode("utf-8", "surrogateescape")

    return lookup


def count_signatures(message: bytes) -> int:
    head = message.split(b"\r\n\r\n", 1)[0]
    return sum(1 for line in head.split(b"\r\n") if line[:15].lower() == b"dkim-signature:")


def verify_all(
    message: bytes, txt: TxtLookup, *, max_signatures: int = 10, minkey: int = 1024
) -> list[DkimSignature]:
    """Verify each DKIM-Signature of ``message`` (CRLF line ends); [] when there is none."""
    n = count_signatures(message)
    if not n:
        return []
    dnsfunc = _dnsfunc(txt)
    out: list[DkimSignature] = []
    log = _Log()
    try:
        d = dkim.DKIM(message, logger=log, minkey=minkey)
    except Exception as exc:
        return [DkimSignature("permerror", "", "", reason=f"message: {exc}")]
    for idx in range(min(n, max_signatures)):
        log.errors.clear()
        d.signature_fields = {}
        sig: dict[bytes, bytes] = {}
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            sig = d.signature_fields or {}
            if ok:
                result, reason = "pass", ""
            elif log.errors:
                result, reason = "permerror", log.errors[-1]
            else:
                result, reason = "fail", "signature did not verify"
        except _DnsTempError as exc:
            sig = d.signature_fields or {}
            result, reason = "temperror", f"key lookup {exc}"
        except dkim.ValidationError as exc:
            sig = d.signature_fields or {}
            body = "body hash mismatch" in str(exc)
            result, reason = ("fail", "body hash mismatch") if body else ("permerror", str(exc))
        except Exception as exc:  # DKIMException and anything dkimpy lets out of bad input
            sig = getattr(d, "signature_fields", None) or {}
            result, reason = "permerror", f"{type(exc).__name__}: {exc}"
        out.append(
            DkimSignature(
                result,
                _text(sig.get(b"d")).lower(),
                _text(sig.get(b"s")),
                _text(sig.get(b"a")),
                _text(sig.get(b"i")),
                reason[:200],
            )
        )
    return out


_TAG_SPLIT = re.compile(r"\s*;\s*")


def key_names(
    message: bytes, max_signatures: int = 10, fields_named: tuple[str, ...] = ("dkim-signature",)
) -> list[str]:
    """The key names (``selector._domainkey.domain``) the message's signatures need, in order,
    so they can be fetched asynchronously before the (CPU-bound) verification. ARC uses
    ``fields_named=("arc-seal", "arc-message-signature")``."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    names: list[str] = []
    fields = re.split(r"\r\n(?![ \t])", head)
    for f in fields:
        name, sep, value = f.partition(":")
        if not sep or name.strip().lower() not in fields_named:
            continue
        tags: dict[str, str] = {}
        for part in _TAG_SPLIT.split(re.sub(r"\s+", " ", value).strip()):
            k, eq, v = part.partition("=")
            if eq:
                tags.setdefault(k.strip(), re.sub(r"\s+", "", v))
        if tags.get("s") and tags.get("d"):
            names.append(f"{tags['s']}._domainkey.{tags['d']}".lower())
        if len(names) >= max_signatures:
            break
    return list(dict.fromkeys(names))


def verify_prefetched(
    message: bytes,
    keys: dict[str, tuple[str, tuple[str, ...]]],
    max_signatures: int = 10,
    minkey: int = 1024,
) -> list[DkimSignature]:
    """:func:`verify_all` with keys fetched beforehand (``name -> (status, records)``); a name
    not fetched is a temperror. Picklable arguments: runs in a worker process too."""

    return verify_all(message, prefetched(keys), max_signatures=max_signatures, minkey=minkey)


def prefetched(keys: dict[str, tuple[str, tuple[str, ...]]]) -> TxtLookup:
    """A TXT lookup answering from keys fetched beforehand; an unknown name is an error."""

    def txt(name: str) -> DnsResult:
        got = keys.get(name.lower().rstrip("."))
        return DnsResult(got[0], got[1]) if got else DnsResult("error")

    return txt
