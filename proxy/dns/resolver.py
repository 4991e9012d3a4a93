"""The asynchronous DNS resolver every check uses: c-ares (aiodns) with timeouts, retries, a
bounded TTL cache and shared in-flight queries.

Contract:
- :meth:`Resolver.lookup` never raises on DNS errors: it returns a :class:`DnsResult` whose
  ``status`` is ``ok``, ``nxdomain``, ``nodata`` (the name exists, not that type), ``timeout``,
  ``servfail`` or ``error``. ``failed`` (timeout/servfail/error) means *temperror*: callers must
  never read it as "not listed" / "does not exist".
- Records are normalised: A/AAAA address strings; PTR/CNAME/NS names without the trailing dot;
  TXT one ``str`` per record with its character-strings joined (UTF-8, else latin-1);
  MX ``(preference, host)``. Records of other types in the answer (a CNAME chain) are dropped.
- A malformed name (empty label, label over 63 octets, non-IDNA) is ``nxdomain``: no such
  name can exist, so it is not a temporary error. Non-ASCII names are looked up as IDNA.
- Answers are cached for their TTL clamped to ``[min_ttl, max_ttl]``; NXDOMAIN/NODATA for
  ``negative_ttl``; failures are not cached. The cache is an LRU of ``cache_size`` entries.
- Identical queries in flight share one upstream query (one future).
- :meth:`Resolver.lookup_blocking` runs :meth:`lookup` on the resolver's loop for a caller in
  another thread (tests drive pyspf this way). spamgate's own checks no longer use it: SPF
  re-runs pyspf against answers resolved asynchronously, DKIM and ARC verify against keys
  fetched beforehand, so no thread ever waits for DNS. It must not be called on that loop.
- Every upstream query and cache hit is counted in ``stats`` and reported to
  :func:`proxy.observability.metrics.dns_query`.

c-ares also keeps a small positive-answer cache of its own (honouring TTLs, not switchable in
pycares 5): an answer may outlive ``max_ttl`` there, never its own TTL.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiodns
import aiodns.error
import dns.exception
import dns.message
import dns.name
import dns.rcode

from proxy.config.fields import ConfigError
from proxy.dns.config import DnsConfig
from proxy.observability import metrics

RDTYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "SOA")
_TYPE_CODES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}

# c-ares status codes (pycares.errno)
_ARES_ENODATA = 1
_ARES_EFORMERR = 2
_ARES_ESERVFAIL = 3
_ARES_ENOTFOUND = 4
_ARES_EREFUSED = 6
_ARES_EBADNAME = 8
_ARES_ETIMEOUT = 12


@dataclass(frozen=True, slots=True)
class DnsResult:
    """The outcome of one lookup; see the module docstring for the record formats."""

    status: str  # "ok" | "nxdomain" | "nodata" | "timeout" | "servfail" | "error"
    records: tuple[Any, ...] = ()
    ttl: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """A temporary error (timeout, SERVFAIL, refused...): never "not listed"."""
        return self.status in ("timeout", "servfail", "error")


def parse_nameserver(value: str, path: str = "dns.nameservers") -> str:
    """``ip``, ``ip:port``, ``[v6]:port`` or a bare IPv6 address -> c-ares server string."""
    text = value.strip()
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(path, f"unterminated IPv6 literal in {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(path, f"expected '[addr]:port', got {value!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(path, f"expected an IP address (optionally with :port), got {value!r}") from None
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError(path, f"invalid port in {value!r}")
    port = port or "53"
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _convert_rdata(rdtype: str, rd: Any) -> Any:
    """A dnspython rdata in the same shape as :func:`_convert` gives for c-ares."""
    if rdtype in ("A", "AAAA"):
        return str(rd.address)
    if rdtype == "MX":
        return (int(rd.preference), str(rd.exchange).rstrip("."))
    if rdtype == "TXT":
        return _text(b"".join(rd.strings))
    if rdtype in ("PTR", "CNAME", "NS"):
        return str(rd.target).rstrip(".")
    if rdtype == "SOA":
        return (str(rd.mname).rstrip("."), str(rd.rname).rstrip("."), int(rd.minimum))
    return rd.to_text()


def _convert(rdtype: str, data: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return str(data.addr)
    if rdtype == "MX":
        return (int(data.priority), str(data.exchange).rstrip("."))
    if rdtype == "TXT":
        raw = data.data
        return _text(raw) if isinstance(raw, bytes) else str(raw)
    if rdtype == "PTR":
        return str(data.dname).rstrip(".")
    if rdtype == "CNAME":
        return str(data.cname).rstrip(".")
    if rdtype == "NS":
        return str(data.nsdname).rstrip(".")
    if rdtype == "SOA":
        return (str(data.mname).rstrip("."), str(data.rname).rstrip("."), int(data.minimum))
    return data


class Resolver:
    """See the module docstring. One per process, bound to the serving event loop."""

    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        self.nameservers = [parse_nameserver(ns) for ns in config.nameservers]
        self.stats: dict[str, int] = {"queries": 0, "cache_hits": 0, "timeouts": 0, "errors": 0}
        self._cache: collections.OrderedDict[tuple[str, str], tuple[float, DnsResult]] = (
            collections.OrderedDict()
        )
        self._inflight: dict[tuple[str, str], asyncio.Future[DnsResult]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._channel: aiodns.DNSResolver | None = None
        self._users = 0
        # One upstream attempt lasts `timeout`; the whole query is bounded by all attempts.
        self._deadline = config.timeout * (config.retries + 1) + 0.25

    # --- lifecycle ---------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the loop that will run the lookups, as one more user (a configuration
        generation); :meth:`close` releases a user and closes with the last one. The first
        lookup binds lazily when nobody did."""
        self._users += 1
        self._attach(loop)

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._channel is not None:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident() if _running_loop() is loop else None
        kwargs: dict[str, Any] = {
            "timeout": self.config.timeout,
            "tries": self.config.retries + 1,
            "loop": loop,
        }
        if self.nameservers:
            kwargs["nameservers"] = self.nameservers
        self._channel = aiodns.DNSResolver(**kwargs)

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self._users = 0
        for fut in list(self._inflight.values()):
            if not fut.done():  # waiters get an error status, never an exception
                fut.set_result(DnsResult("error"))
        self._inflight.clear()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- lookups -----------------------------------------------------------------------------
    async def lookup(self, name: str, rdtype: str) -> DnsResult:
        """Resolve ``name`` (case and trailing dot ignored); ``rdtype`` one of :data:`RDTYPES`
        (ValueError otherwise: a programming error, not a DNS one)."""
        rdtype = rdtype.upper()
        if rdtype not in _TYPE_CODES:
            raise ValueError(f"unsupported record type {rdtype!r}; supported: {', '.join(RDTYPES)}")
        qname = name.strip().rstrip(".").lower()
        if not qname.isascii():
            try:
                qname = qname.encode("idna").decode("ascii")
            except UnicodeError:
                return DnsResult("nxdomain")
        key = (qname, rdtype)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                self.stats["cache_hits"] += 1
                metrics.dns_query(rdtype, "cache_hit", 0.0)
                return hit[1]
            del self._cache[key]
        fut = self._inflight.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            if self._channel is None or self._loop is not loop:
                self._attach(loop)
            if self._loop_thread is None:
                self._loop_thread = threading.get_ident()
            fut = loop.create_future()
            self._inflight[key] = fut
            task = loop.create_task(self._resolve(key, fut))
            task.add_done_callback(_consume)
        # shield: a cancelled caller (stage budget) must not cancel the query others share.
        return await asyncio.shield(fut)

    def lookup_blocking(self, name: str, rdtype: str, timeout: float | None = None) -> DnsResult:
        """Run :meth:`lookup` on the resolver's loop from a worker thread and wait for it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("resolver is not bound to a running loop (call bind() first)")
        if self._loop_thread == threading.get_ident() or _running_loop() is loop:
            raise RuntimeError("lookup_blocking() called on the resolver's own loop thread")
        wait = self._deadline + 0.5 if timeout is None else timeout
        cf = asyncio.run_coroutine_threadsafe(self.lookup(name, rdtype), loop)
        try:
            return cf.result(timeout=wait)
        except TimeoutError:
            cf.cancel()
            return DnsResult("timeout")

    async def _resolve(self, key: tuple[str, str], fut: asyncio.Future[DnsResult]) -> None:
        qname, rdtype = key
        started = time.monotonic()
        try:
            result = await self._query(qname, rdtype)
        except asyncio.CancelledError:
            self._inflight.pop(key, None)
            if not fut.done():
                fut.set_result(DnsResult("timeout"))
            raise
        except Exception:
            result = DnsResult("error")
        self._inflight.pop(key, None)
        self.stats["queries"] += 1
        if result.status == "timeout":
            self.stats["timeouts"] += 1
        elif result.failed:
            self.stats["errors"] += 1
        metrics.dns_query(rdtype, result.status, time.monotonic() - started)
        self._store(key, result)
        if not fut.done():
            fut.set_result(result)

    async def _query(self, qname: str, rdtype: str) -> DnsResult:
        code = _TYPE_CODES[rdtype]
        if not qname:
            return DnsResult("error")
        assert self._channel is not None
        try:
            answer = await asyncio.wait_for(self._channel.query_dns(qname, rdtype), self._deadline)
        except TimeoutError:
            return DnsResult("timeout")
        except aiodns.error.DNSError as exc:
            errno = exc.args[0] if exc.args else None
            if errno == _ARES_ENOTFOUND:
                return DnsResult("nxdomain", ttl=self.config.negative_ttl)
            if errno == _ARES_ENODATA:
                return DnsResult("nodata", ttl=self.config.negative_ttl)
            if errno == _ARES_ETIMEOUT:
                return DnsResult("timeout")
            if errno == _ARES_ESERVFAIL:
                return DnsResult("servfail")
            if errno == _ARES_EBADNAME:
                # c-ares refuses labels with ':', '/', spaces...: legal in the DNS (SPF macros
                # expand to them), so ask on the wire with dnspython instead.
                return await self._query_wire(qname, rdtype)
            return DnsResult("error")
        except Exception:
            return DnsResult("error")
        records: list[Any] = []
        ttls: list[int] = []
        for rr in answer.answer:
            if rr.type != code:
                continue
            try:
                records.append(_convert(rdtype, rr.data))
            except (AttributeError, TypeError, ValueError):
                continue
            ttls.append(int(rr.ttl))
        if not records:
            return DnsResult("nodata", ttl=self.config.negative_ttl)
        ttl = min(max(float(min(ttls)), self.config.min_ttl), self.config.max_ttl)
        return DnsResult("ok", tuple(records), ttl)

    async def _query_wire(self, qname: str, rdtype: str) -> DnsResult:
        """The same query through dnspython (UDP, TCP on truncation): only for names c-ares
        refuses to build. A name that cannot be encoded at all is ``nxdomain``."""
        import dns.asyncquery  # only here: most processes never need it
        import dns.resolver

        try:
            name = dns.name.from_text(qname)
            query = dns.message.make_query(name, rdtype)
        except (dns.exception.DNSException, ValueError):
            return DnsResult("nxdomain")
        servers = self.nameservers or [
            parse_nameserver(ns) for ns in dns.resolver.Resolver().nameservers if isinstance(ns, str)
        ]
        for server in servers:
            host, _, port = server.rpartition(":")
            host = host.strip("[]")
            for _attempt in range(self.config.retries + 1):
                try:
                    response, _tcp = await dns.asyncquery.udp_with_fallback(
                        query, host, timeout=self.config.timeout, port=int(port)
                    )
                except dns.exception.Timeout:
                    continue
                except (dns.exception.DNSException, OSError):
                    break
                return self._from_message(response, rdtype)
        return DnsResult("timeout")

    def _from_message(self, response: dns.message.Message, rdtype: str) -> DnsResult:
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return DnsResult("nxdomain", ttl=self.config.negative_ttl)
        if rcode == dns.rcode.SERVFAIL:
            return DnsResult("servfail")
        if rcode != dns.rcode.NOERROR:
            return DnsResult("error")
        code = _TYPE_CODES[rdtype]
        records: list[Any] = []
        ttls: list[int] = []
        for rrset in response.answer:
            if rrset.rdtype != code:
                continue
            ttls.append(int(rrset.ttl))
            records += [_convert_rdata(rdtype, rd) for rd in rrset]
        if not records:
            return DnsResult("nodata", ttl=self.config.negative_ttl)
        ttl = min(max(float(min(ttls)), self.config.min_ttl), self.config.max_ttl)
        return DnsResult("ok", tuple(records), ttl)

    def _store(self, key: tuple[str, str], result: DnsResult) -> None:
        if self.config.cache_size <= 0 or result.failed or result.ttl <= 0:
            return
        self._cache[key] = (time.monotonic() + result.ttl, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
