"""Lookup tables at ISP size: local domains, valid recipients, access rules, from files.

Knows nothing of spam: it loads keys and values and answers membership in O(1).

- :class:`FingerprintSet`: a set of strings kept as 64-bit fingerprints in one open-addressing
  array (8 bytes a slot, load factor <= 0.5: ~16 bytes a key, against ~100 for a ``set`` of
  ``str``): 1,000,000 recipients take ~16 MiB per worker (bench/tables_cost.py). A false
  positive needs a 64-bit collision (about 1 in 10^13 per lookup at 1M keys).
- Files: one key per line, ``#`` comments, case-insensitive. Access files:
  ``<kind>:<key> <OK|REJECT|DEFER|score> [text]`` (see docs/ROUTING.md). A source
  ``sqlite:/path.db`` reads the tables ``domains(key)``, ``recipients(key)`` and
  ``access(key, action, text)`` of that database instead (read-only), into the same memory
  structures; its change is seen on the database file (and its ``-wal``). A source
  ``redis:`` reads the store's Redis (SETs ``<prefix>tables:domains`` / ``:recipients``,
  HASH ``<prefix>tables:access``), re-read when ``<prefix>tables:version`` changes.
- :class:`Tables` loads every file in a worker thread at start and on reload (SIGHUP builds a
  new generation), and re-reads a file whose mtime or size changed, checked every
  ``tables.reload_interval``; a file that fails to parse keeps the previous contents (logged).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sqlite3
from array import array
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from proxy.observability import metrics

log = structlog.get_logger("spamgate")
_MASK = (1 << 64) - 1
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _fp(key: str) -> int:
    return (hash(key) & _MASK) or 1  # 0 marks an empty slot


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class FingerprintSet:
    """Membership of many strings in ~16 bytes each; lookups in O(1) (linear probing)."""

    def __init__(self, keys: Iterable[str] = (), size_hint: int = 0) -> None:
        cap = 8
        while cap < 2 * max(size_hint, 1):
            cap *= 2
        self.slots = array("Q", bytes(8 * cap))
        self.mask = cap - 1
        self.count = 0
        for k in keys:
            self.add(k)

    def add(self, key: str) -> None:
        if 2 * (self.count + 1) > len(self.slots):
            self._grow()
        fp = _fp(key)
        slots, i = self.slots, fp & self.mask
        while slots[i]:
            if slots[i] == fp:
                return
            i = (i + 1) & self.mask
        slots[i] = fp
        self.count += 1

    def _grow(self) -> None:
        old = [fp for fp in self.slots if fp]
        self.slots = array("Q", bytes(16 * len(self.slots)))
        self.mask = len(self.slots) - 1
        for fp in old:
            i = fp & self.mask
            while self.slots[i]:
                i = (i + 1) & self.mask
            self.slots[i] = fp

    def __contains__(self, key: str) -> bool:
        fp = _fp(key)
        slots, mask = self.slots, self.mask
        i = fp & mask
        while True:
            s = slots[i]
            if s == fp:
                return True
            if not s:
                return False
            i = (i + 1) & mask

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return len(self.slots) * 8


def _sqlite_lines(source: str, table: str) -> list[str]:
    """``sqlite:/path.db``: the rows of ``table`` as lines (read-only; columns joined by spaces)."""
    uri = "file:" + source[len("sqlite:") :] + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            if table == "access":
                rows = db.execute("SELECT key, action, coalesce(text, '') FROM access")
            else:
                rows = db.execute(f"SELECT key FROM {table}")  # noqa: S608 - a fixed name
            return [" ".join(str(c) for c in row).strip() for row in rows]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{source}: table {table}: {exc}") from None


Fetched = dict[str, list[str]]  # lines read from Redis beforehand, by table name


def _lines(source: str, table: str, fetched: Fetched | None = None) -> list[str]:
    if source == "redis:":
        return (fetched or {}).get(table, [])
    if source.startswith("sqlite:"):
        return _sqlite_lines(source, table)
    return Path(source).read_text(encoding="utf-8").splitlines()


def read_keys(path: str, table: str = "domains", fetched: Fetched | None = None) -> list[str]:
    out = []
    for line in _lines(path, table, fetched):
        item = line.split("#", 1)[0].strip().lower().rstrip(".")
        if item:
            out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class AccessRule:
    key: str  # as written: "rcpt:bob@example.org", "from:@example.net", "client:192.0.2.0/24"
    action: str  # "ok", "reject", "defer", "score"
    score: float = 0.0
    text: str = ""


@dataclass(slots=True)
class AccessTable:
    exact: dict[str, AccessRule] = field(default_factory=dict)  # "rcpt:...", "from:...", "client:<ip>"
    networks: list[tuple[Network, AccessRule]] = field(default_factory=list)

    def client(self, ip: str) -> AccessRule | None:
        rule = self.exact.get(f"client:{ip}")
        if rule is not None or not self.networks:
            return rule
        addr = ipaddress.ip_address(ip)
        best: tuple[int, AccessRule] | None = None
        for net, r in self.networks:  # longest prefix wins; network rules are few
            if addr in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, r)
        return best[1] if best else None


def parse_access(path: str, fetched: Fetched | None = None) -> AccessTable:
    table = AccessTable()
    for lineno, line in enumerate(_lines(path, "access", fetched), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        parts = body.split(None, 2)
        where = f"{path}:{lineno}"
        if len(parts) < 2 or ":" not in parts[0]:
            raise ValueError(f"{where}: expected '<kind>:<key> <OK|REJECT|DEFER|score> [text]'")
        kind, _, key = parts[0].partition(":")
        kind, key = kind.lower(), key.lower().rstrip(".")
        if kind not in ("rcpt", "from", "client"):
            raise ValueError(f"{where}: kind must be rcpt:, from: or client:, got {kind!r}")
        word, text = parts[1], (parts[2] if len(parts) > 2 else "")
        upper = word.upper()
        if upper in ("OK", "REJECT", "DEFER"):
            rule = AccessRule(parts[0], upper.lower(), 0.0, text)
        else:
            try:
                rule = AccessRule(parts[0], "score", float(word), text)
            except ValueError:
                raise ValueError(
                    f"{where}: action must be OK, REJECT, DEFER or a score, got {word!r}"
                ) from None
        if kind == "client" and "/" in key:
            try:
                table.networks.append((ipaddress.ip_network(key, strict=False), rule))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        else:
            if kind == "client":
                try:
                    key = str(ipaddress.ip_address(key))
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
            table.exact[f"{kind}:{key}"] = rule
    return table


@dataclass(slots=True)
class Recipients:
    """Valid recipients; only domains with at least one entry are checked (``@domain``: any)."""

    users: FingerprintSet = field(default_factory=FingerprintSet)
    domains: FingerprintSet = field(default_factory=FingerprintSet)  # domains the table covers
    catch_all: FingerprintSet = field(default_factory=FingerprintSet)

    def known(self, address: str) -> bool | None:
        """True/False for a covered domain, None when the table says nothing about it."""
        address = address.lower()
        domain = address.rpartition("@")[2].rstrip(".")
        if domain not in self.domains:
            return None
        return address in self.users or domain in self.catch_all


def load_recipients(paths: list[str], fetched: Fetched | None = None) -> Recipients:
    keys = [k for p in paths for k in read_keys(p, "recipients", fetched)]
    rec = Recipients(FingerprintSet(size_hint=len(keys)))
    for k in keys:
        local, at, domain = k.rpartition("@")
        if not at:
            continue
        rec.domains.add(domain)
        if local:
            rec.users.add(k)
        else:
            rec.catch_all.add(domain)
    return rec


def load_domains(paths: list[str], fetched: Fetched | None = None) -> FingerprintSet:
    keys = [k for p in paths for k in read_keys(p, "domains", fetched)]
    return FingerprintSet(keys, size_hint=len(keys))


def load_access(paths: list[str], fetched: Fetched | None = None) -> AccessTable:
    merged = AccessTable()
    for p in paths:
        t = parse_access(p, fetched)
        merged.exact.update(t.exact)
        merged.networks += t.networks
    return merged


RunBlocking = Callable[..., Awaitable[Any]]


class Tables:
    """The loaded tables of one generation, re-read on change."""

    def __init__(
        self,
        domain_files: list[str],
        recipient_files: list[str],
        access_files: list[str],
        interval: float,
        store: Any = None,
    ) -> None:
        self.files = {"domains": domain_files, "recipients": recipient_files, "access": access_files}
        self.interval = interval
        self.domains = FingerprintSet()
        self.recipients: Recipients | None = None  # None: no recipient table configured
        self.access = AccessTable()
        self._stamps: dict[str, tuple[tuple[float, int], ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self.store = store  # the state store, for 'redis:' sources
        self._redis_version: Any = None

    @property
    def configured(self) -> bool:
        return any(self.files.values())

    def _stamp(self, name: str) -> tuple[tuple[float, int], ...]:
        out = []
        for p in self.files[name]:
            path = p[len("sqlite:") :] if p.startswith("sqlite:") else p
            for f in (path, path + "-wal") if p.startswith("sqlite:") else (path,):
                try:
                    st = os.stat(f)
                    out.append((st.st_mtime, st.st_size))
                except OSError:
                    out.append((-1.0, -1))
        return tuple(out)

    def load(self, name: str, fetched: Fetched | None = None) -> None:
        """Read one table (blocking: run it in a thread); raises on a bad file."""
        stamp = self._stamp(name)
        paths = self.files[name]
        if name == "domains":
            self.domains = load_domains(paths, fetched)
        elif name == "recipients":
            self.recipients = load_recipients(paths, fetched) if paths else None
        else:
            self.access = load_access(paths, fetched)
        self._stamps[name] = stamp
        metrics.table_loaded(name, self.entries(name))

    def entries(self, name: str) -> int:
        """How many entries the table ``name`` holds now."""
        if name == "domains":
            return len(self.domains)
        if name == "recipients":
            r = self.recipients
            return 0 if r is None else len(r.users) + len(r.catch_all)
        return len(self.access.exact) + len(self.access.networks)

    def load_all(self, fetched: Fetched | None = None) -> None:
        for name in self.files:
            self.load(name, fetched)

    # -- 'redis:' sources: SETs <prefix>tables:domains / :recipients, HASH <prefix>tables:access,
    # re-read when <prefix>tables:version changes (INCR it after an update).

    def _redis_names(self) -> list[str]:
        return [n for n, paths in self.files.items() if "redis:" in paths]

    async def _fetch_redis(self) -> Fetched:
        client = getattr(self.store, "client", None)
        if client is None:
            raise ValueError("'redis:' tables need store.url = redis://...")
        prefix = self.store.prefix
        out: Fetched = {}
        self._redis_version = await client.get(f"{prefix}tables:version")
        for name in self._redis_names():
            key = f"{prefix}tables:{name}"
            if name == "access":
                pairs = (await client.hgetall(key)).items()
                out[name] = [f"{_text(k)} {_text(v)}" for k, v in pairs]
            else:
                out[name] = [_text(m) async for m in client.sscan_iter(key, count=5000)]
        return out

    async def _redis_changed(self) -> bool:
        if not self._redis_names():
            return False
        version = await self.store.client.get(f"{self.store.prefix}tables:version")
        return bool(version != self._redis_version)

    async def start(self, run_blocking: RunBlocking | None) -> None:
        if not self.configured:
            return
        fetched = await self._fetch_redis() if self._redis_names() else None
        if run_blocking is None:
            self.load_all(fetched)
        else:
            await run_blocking(self.load_all, fetched)
        self._task = asyncio.ensure_future(self._watch(run_blocking))

    async def _watch(self, run_blocking: RunBlocking | None) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._watch_redis(run_blocking)
            for name in self.files:
                if self.files[name] and self._stamp(name) != self._stamps.get(name):
                    try:
                        if run_blocking is None:
                            self.load(name)
                        else:
                            await run_blocking(self.load, name)
                    except (OSError, ValueError, UnicodeError) as exc:
                        self._stamps[name] = self._stamp(name)  # do not retry a bad file every tick
                        log.error("table_reload_failed", table=name, error=str(exc))
                        metrics.table_loaded(name, None)
                        continue
                    log.info("table_reloaded", table=name, files=self.files[name])

    async def _watch_redis(self, run_blocking: RunBlocking | None) -> None:
        try:
            if not await self._redis_changed():
                return
            fetched = await self._fetch_redis()
            for name in self._redis_names():
                if run_blocking is None:
                    self.load(name, fetched)
                else:
                    await run_blocking(self.load, name, fetched)
                log.info("table_reloaded", table=name, files=self.files[name])
        except Exception as exc:  # Redis down or a bad entry: keep the tables we have
            log.error("table_reload_failed", table="redis", error=repr(exc))
            for name in self._redis_names():
                metrics.table_loaded(name, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
