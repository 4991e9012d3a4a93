"""``sqlite:///path``: state in one SQLite file, shared by the worker processes of one host.

WAL journal, a busy timeout, and every operation inside a ``BEGIN IMMEDIATE`` transaction (the
write lock is taken up front, so read-modify-write is atomic across processes). Calls run in a
small dedicated thread pool with one connection per thread; the event loop never blocks.
Rows carry an expiry time; expired rows read as absent and are deleted every
``store.purge_interval``. The path is relative to the working directory.

**Group commit.** The operations that sessions submit while a transaction is running (and those
of one turn of the event loop: the concurrent rate-limit windows, slot and reputation reads of a
stage) are queued and run together in the next transaction: one thread hand-off, one
``BEGIN IMMEDIATE``/``COMMIT`` and one wake-up of the loop for the whole group, at most one
transaction of this process at a time (two would only wait for each other's write lock). Each
operation stays atomic (the group is). If one operation of a group raises, the group is rolled
back and its operations are run again one transaction each, so a bad row fails only its own
caller. An operation whose caller gave up (timeout, cancellation) before its group started is
not run.
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


# The most operations one transaction carries (it holds the write lock of every worker).
_GROUP_MAX = 256


class _SqlKV:
    """One transaction's view of the table: reads are cached and writes deferred to ``flush``.

    A group commits many operations at once, and they touch the same keys (the sender domain's
    window, a /24's counters): each key is read at most once and written once, with the last
    value, at the end of the transaction (atomic all the same: nothing is visible before COMMIT).
    A value handed out by ``get`` may be shared within the transaction; an operation that changes
    it puts it back (as every operation of :mod:`proxy.state.kvops` does).
    """

    __slots__ = ("cache", "db", "dirty")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.cache: dict[str, tuple[Any, float] | None] = {}
        self.dirty: set[str] = set()

    def get(self, key: str, now: float) -> Any:
        if key in self.cache:
            item = self.cache[key]
        else:
            row = self.db.execute("SELECT v, exp FROM kv WHERE k = ?", (key,)).fetchone()
            item = self.cache[key] = None if row is None else (json.loads(row[0]), row[1])
        if item is None or item[1] <= now:
            return None
        return item[0]

    def get_many(self, keys: list[str], now: float) -> list[Any]:
        missing = [k for k in keys if k not in self.cache]
        if missing:
            for k in missing:
                self.cache[k] = None
            query = f"SELECT k, v, exp FROM kv WHERE k IN ({','.join('?' * len(missing))})"  # noqa: S608 - placeholders only
            for k, v, exp in self.db.execute(query, missing):
                self.cache[k] = (json.loads(v), exp)
        return [self.get(k, now) for k in keys]

    def put(self, key: str, value: Any, expires: float) -> None:
        self.cache[key] = (value, expires)
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        self.cache[key] = None
        self.dirty.add(key)

    def flush(self) -> None:
        """Write the deferred changes (inside the transaction, before COMMIT)."""
        if not self.dirty:
            return
        puts, dels = [], []
        for key in self.dirty:
            item = self.cache[key]
            if item is None:
                dels.append((key,))
            else:
                puts.append((key, json.dumps(item[0]), item[1]))
        if puts:
            self.db.executemany(
                "INSERT INTO kv (k, v, exp) VALUES (?, ?, ?) ON CONFLICT(k) DO UPDATE SET "
                "v = excluded.v, exp = excluded.exp",
                puts,
            )
        if dels:
            self.db.executemany("DELETE FROM kv WHERE k = ?", dels)
        self.dirty.clear()


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
        # Group commit (touched on the event loop only): queued operations, whether a group is
        # in the thread now, and the loop they belong to (a store outliving a loop starts over).
        self._queue: list[tuple[Callable[[_SqlKV], Any], asyncio.Future[Any]]] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transactions = 0  # transactions committed or rolled back (tests, bench)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=max(self.timeout, 0.05), isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode = WAL")  # set-up waits up to the timeout (connect's)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(_SCHEMA)
            # From here a busy database answers at once and _begin waits: SQLite's own busy
            # handler sleeps 1, 2, 5, 10... ms between tries, far longer than the other worker
            # holds the lock for (one group: about a millisecond).
            db.execute("PRAGMA busy_timeout = 0")
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    def _txn(self, fn: Callable[[_SqlKV], T]) -> T:
        db = self._db()
        self.transactions += 1
        self._begin(db)
        try:
            kv = _SqlKV(db)
            out = fn(kv)
            kv.flush()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    def _begin(self, db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried while another process holds the write lock: short sleeps
        (50 us doubling to 1 ms) up to ``store.timeout``, then the "database is locked" error."""
        deadline = time.monotonic() + max(self.timeout, 0.05)
        pause = 0.00005
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def _txn_group(self, fns: list[Callable[[_SqlKV], Any]]) -> list[tuple[bool, Any]]:
        """Run a group of operations in one transaction; on an operation's error, each alone."""
        try:
            return self._txn(lambda kv: [(True, fn(kv)) for fn in fns])
        except sqlite3.Error:
            raise  # the database failed (locked past the timeout, disk): the whole group fails
        except Exception:  # one operation failed: isolate it
            if len(fns) == 1:
                raise
        out: list[tuple[bool, Any]] = []
        for fn in fns:
            try:
                out.append((True, self._txn(fn)))
            except sqlite3.Error:
                raise
            except Exception as exc:  # handed to that operation's caller
                out.append((False, exc))
        return out

    async def _run(self, fn: Callable[[_SqlKV], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._queue, self._busy = loop, [], False
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_interval
            loop.run_in_executor(self._pool, self._purge)
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((fn, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start_group)  # the rest of this loop turn joins the group
        return await fut

    def _start_group(self) -> None:
        live = [(fn, fut) for fn, fut in self._queue[:_GROUP_MAX] if not fut.done()]
        self._queue = self._queue[_GROUP_MAX:]
        if not live:
            if self._queue:
                self._start_group()
            else:
                self._busy = False
            return
        loop = asyncio.get_running_loop()
        try:
            running = loop.run_in_executor(self._pool, self._txn_group, [fn for fn, _ in live])
        except RuntimeError as exc:  # the store was closed: nothing will run again
            for _, fut in live + self._queue:
                if not fut.done():
                    fut.set_exception(exc)
            self._queue, self._busy = [], False
            return
        running.add_done_callback(lambda done: self._end_group(live, done))

    def _end_group(
        self, group: list[tuple[Callable[[_SqlKV], Any], asyncio.Future[Any]]], done: asyncio.Future[Any]
    ) -> None:
        cancelled = done.cancelled()
        exc = None if cancelled else done.exception()
        results: list[tuple[bool, Any]] = [] if cancelled or exc is not None else done.result()
        for i, (_, fut) in enumerate(group):
            if fut.done():
                continue
            if cancelled:
                fut.cancel()
            elif exc is not None:
                fut.set_exception(exc)
            elif results[i][0]:
                fut.set_result(results[i][1])
            else:
                fut.set_exception(results[i][1])
        if self._queue:
            self._start_group()
        else:
            self._busy = False

    def _purge(self) -> int:
        def purge(kv: _SqlKV) -> int:
            return int(kv.db.execute("DELETE FROM kv WHERE exp <= ?", (time.time(),)).rowcount)

        try:
            return self._txn(purge)
        except sqlite3.Error:
            return 0

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _window_hit(self, name: str, window: float, cost: int, now: float) -> float:
        return await self._run(lambda kv: kvops.window_hit(kv, self._k(name), window, cost, now))

    async def _window_hits(self, windows: list[tuple[str, float]], now: float) -> list[float]:
        keyed = [(self._k(n), w) for n, w in windows]
        return await self._run(lambda kv: [kvops.window_hit(kv, k, w, 1, now) for k, w in keyed])

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
