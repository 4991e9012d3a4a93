"""``sqlite:///path``: state in one SQLite file, shared by the worker processes of one host.

WAL journal, a busy timeout, and every operation in one ``BEGIN IMMEDIATE`` transaction (the
write lock is taken up front, so read-modify-write is atomic across processes). Calls run in a
small dedicated thread pool with one connection per thread; the event loop never blocks.
Rows carry an expiry time; expired rows read as absent and are deleted every
``store.purge_interval``. The path is relative to the working directory.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from proxy.state import kvops
from proxy.state.base import Store

T = TypeVar("T")

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, exp REAL NOT NULL)"


class _SqlKV:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str, now: float) -> Any:
        row = self.db.execute("SELECT v, exp FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None or row[1] <= now:
            return None
        return json.loads(row[0])

    def put(self, key: str, value: Any, expires: float) -> None:
        self.db.execute(
            "INSERT INTO kv (k, v, exp) VALUES (?, ?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v, "
            "exp = excluded.exp",
            (key, json.dumps(value), expires),
        )

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM kv WHERE k = ?", (key,))


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(
        self,
        path: str,
        timeout: float,
        prefix: str = "sg:",
        purge_interval: float = 300.0,
        down_backoff: float = 0.0,
    ) -> None:
        super().__init__(timeout, prefix, down_backoff)
        self.path = path
        self.purge_interval = purge_interval
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spamgate-sqlite")
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._next_purge = time.monotonic() + purge_interval

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=max(self.timeout, 0.05), isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA busy_timeout = {int(max(self.timeout, 0.05) * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(_SCHEMA)
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    def _txn(self, fn: Callable[[_SqlKV], T]) -> T:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(_SqlKV(db))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    async def _run(self, fn: Callable[[_SqlKV], T]) -> T:
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_interval
            asyncio.get_running_loop().run_in_executor(self._pool, self._purge)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._txn, fn)

    def _purge(self) -> int:
        try:
            cur = self._db().execute("DELETE FROM kv WHERE exp <= ?", (time.time(),))
            return cur.rowcount
        except sqlite3.Error:
            return 0

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _window_hit(self, name: str, window: float, cost: int, now: float) -> float:
        return await self._run(lambda kv: kvops.window_hit(kv, self._k(name), window, cost, now))

    async def _incr(self, name: str, ttl: float) -> int:
        now = time.time()
        return await self._run(lambda kv: kvops.incr(kv, self._k(name), ttl, now))

    async def _get(self, name: str) -> str | None:
        now = time.time()
        v = await self._run(lambda kv: kv.get(self._k(name), now))
        return None if v is None else str(v)

    async def _set(self, name: str, value: str, ttl: float) -> None:
        exp = time.time() + ttl
        await self._run(lambda kv: kv.put(self._k(name), value, exp))

    async def _delete(self, name: str) -> None:
        await self._run(lambda kv: kv.delete(self._k(name)))

    async def _slot_acquire(
        self, name: str, slot: str, limit: int, ttl: float, now: float
    ) -> tuple[bool, int]:
        return await self._run(lambda kv: kvops.slot_acquire(kv, self._k(name), slot, limit, ttl, now))

    async def _slot_refresh(self, name: str, slot: str, ttl: float, now: float) -> None:
        await self._run(lambda kv: kvops.slot_refresh(kv, self._k(name), slot, ttl, now))

    async def _slot_release(self, name: str, slot: str) -> None:
        now = time.time()
        await self._run(lambda kv: kvops.slot_release(kv, self._k(name), slot, now))

    async def _greylist(
        self, name: str, delay: float, window: float, lifetime: float, now: float
    ) -> tuple[str, float]:
        return await self._run(lambda kv: kvops.greylist(kv, self._k(name), delay, window, lifetime, now))

    async def _decay(  # noqa: PLR0917
        self, name: str, accepted: float, rejected: float, half_life: float, ttl: float, now: float
    ) -> tuple[float, float]:
        return await self._run(
            lambda kv: kvops.decay(kv, self._k(name), accepted, rejected, half_life, ttl, now)
        )

    async def _window_clear(self, name: str, window: float, now: float) -> None:
        await self._run(lambda kv: kvops.window_clear(kv, self._k(name), window, now))

    async def _scan(self, prefix: str, limit: int, now: float) -> list[tuple[str, str]]:
        lo, n = self._k(prefix), len(self.prefix)
        hi = lo + "\U0010ffff"  # a range, not LIKE: addresses hold '_' and '%'

        def run() -> list[tuple[str, str]]:
            rows = self._db().execute(
                "SELECT k, v FROM kv WHERE k >= ? AND k < ? AND exp > ? LIMIT ?", (lo, hi, now, limit)
            )
            return [(k[n:], str(json.loads(v))) for k, v in rows]

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def _ping(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, lambda: self._db().execute("SELECT 1"))

    async def purge(self) -> int:
        """Delete expired rows now; returns how many."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._purge)

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                for db in self._conns:
                    try:
                        db.close()
                    except sqlite3.Error:
                        pass
                self._conns.clear()

        self._pool.shutdown(wait=True)
        _close()
