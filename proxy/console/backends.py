"""Where the history rows live: SQLite table, Redis capped list, or an in-process ring.

Every backend offers ``write(rows)`` (a batch, trimmed to the row cap and retention in the same
step), ``query(filters, after, since, limit)`` (newest first; ``after``: only rows with a
higher id, for live updates) and ``get(ref)``. Rows get an increasing ``id``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.state.config import StoreConfig


@dataclass(frozen=True, slots=True)
class Filters:
    """What the history page filters on; empty means any."""

    ref: str = ""
    ip: str = ""
    sender: str = ""
    rcpt: str = ""
    action: str = ""
    symbol: str = ""

    def matches(self, row: dict[str, Any]) -> bool:
        if self.ref and not (row["ref"] == self.ref or row["ref"].startswith(self.ref + ".")):
            return False
        if self.ip and row["ip"] != self.ip:
            return False
        if self.sender and self.sender.lower() not in (row["sender"] or "").lower():
            return False
        if self.rcpt and not any(self.rcpt.lower() in r["to"].lower() for r in row["rcpts"]):
            return False
        if self.action and row["action"] != self.action:
            return False
        return not self.symbol or any(s["name"] == self.symbol.upper() for s in row["symbols"])


def _names(row: dict[str, Any]) -> str:
    return " ".join(s["name"] for s in row["symbols"])


class Backend:
    """A bounded history; subclasses implement the storage."""

    name = "base"

    def __init__(self, max_rows: int, retention: float) -> None:
        self.max_rows = max_rows
        self.retention = retention

    async def write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def query(
        self, filters: Filters, after: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def recent(self, since: float, limit: int) -> list[dict[str, Any]]:
        """Rows since ``since`` for the overview: at least ts, action, ip, sender, symbol names."""
        return await self.query(Filters(), since=since, limit=limit)

    async def get(self, ref: str) -> dict[str, Any] | None:
        rows = await self.query(Filters(ref=ref), limit=50)
        return next((r for r in rows if r["ref"] == ref), None)

    async def close(self) -> None:
        """Release connections and threads."""


class MemoryBackend(Backend):
    """``memory://``: a ring in this process (one worker; for tests and ``memory://`` stores)."""

    name = "memory"

    def __init__(self, max_rows: int, retention: float) -> None:
        super().__init__(max_rows, retention)
        self.rows: deque[dict[str, Any]] = deque(maxlen=max_rows)
        self.next_id = 1

    async def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.rows.append({**row, "id": self.next_id})
            self.next_id += 1

    async def query(
        self, filters: Filters, after: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[dict[str, Any]]:
        oldest = max(since, time.time() - self.retention)
        out = []
        for row in reversed(self.rows):
            if row["id"] <= after or row["ts"] < oldest:
                break
            if filters.matches(row):
                out.append(row)
                if len(out) >= limit:
                    break
        return out


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
    "ref TEXT NOT NULL, ip TEXT NOT NULL, action TEXT NOT NULL, sender TEXT NOT NULL, "
    "symbols TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_ts ON history (ts)",
    "CREATE INDEX IF NOT EXISTS history_ref ON history (ref)",
    "CREATE INDEX IF NOT EXISTS history_ip ON history (ip)",
)


class SqliteBackend(Backend):
    """``sqlite:///path``: a ``history`` table in the store's file, shared by the host's workers."""

    name = "sqlite"

    def __init__(self, path: str, max_rows: int, retention: float) -> None:
        super().__init__(max_rows, retention)
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spamgate-history")
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            for stmt in _SCHEMA:
                db.execute(stmt)
            self._db = db
        return self._db

    def _write(self, rows: list[dict[str, Any]]) -> None:
        db = self._conn()
        values = [
            (r["ts"], r["ref"], r["ip"], r["action"], r["sender"], _names(r), json.dumps(r)) for r in rows
        ]
        db.execute("BEGIN IMMEDIATE")  # the write lock is held for the inserts and trims only
        try:
            db.executemany(
                "INSERT INTO history (ts, ref, ip, action, sender, symbols, data) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: E501
                values,
            )
            db.execute("DELETE FROM history WHERE ts < ?", (time.time() - self.retention,))
            db.execute("DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?", (self.max_rows,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _query(self, filters: Filters, after: int, since: float, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT id, data FROM history WHERE id > ? AND ts >= ?"
        args: list[Any] = [after, max(since, time.time() - self.retention)]
        if filters.ref:
            sql += " AND (ref = ? OR ref LIKE ?)"
            args += [filters.ref, filters.ref.replace("%", "").replace("_", "") + ".%"]
        if filters.ip:
            sql += " AND ip = ?"
            args.append(filters.ip)
        if filters.action:
            sql += " AND action = ?"
            args.append(filters.action)
        sql += " ORDER BY id DESC"
        out: list[dict[str, Any]] = []
        for row_id, data in self._conn().execute(sql, args):
            row = json.loads(data)
            row["id"] = row_id
            if filters.matches(row):
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    def _light(self, since: float, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT ts, action, ip, sender, symbols FROM history WHERE ts >= ? ORDER BY id DESC LIMIT ?"
        return [
            {"ts": ts, "action": a, "ip": ip, "sender": snd, "symbols": [{"name": n} for n in sy.split()]}
            for ts, a, ip, snd, sy in self._conn().execute(
                sql, (max(since, time.time() - self.retention), limit)
            )
        ]

    async def write(self, rows: list[dict[str, Any]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write, rows)

    async def recent(self, since: float, limit: int) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._light, since, limit)

    async def query(
        self, filters: Filters, after: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._query, filters, after, since, limit
        )

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=True)


# Ids and list order must agree across hosts (live updates stop at the first id already seen):
# the id is taken and the rows pushed in one atomic script. Elements are "<id> <json>".
_PUSH = """
local first = redis.call('INCRBY', KEYS[2], #ARGV - 2) - (#ARGV - 2)
for i = 3, #ARGV do
  redis.call('LPUSH', KEYS[1], tostring(first + i - 2) .. ' ' .. ARGV[i])
end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return first
"""


class RedisBackend(Backend):
    """Redis: a list of rows, newest first, trimmed to the cap and expiring with retention."""

    name = "redis"
    _CHUNK = 500

    def __init__(self, client: Any, prefix: str, max_rows: int, retention: float) -> None:
        super().__init__(max_rows, retention)
        self.client = client
        self.key = prefix + "{history}"
        self.id_key = prefix + "{history}:id"

    async def write(self, rows: list[dict[str, Any]]) -> None:
        args = [self.max_rows, int(self.retention) + 1, *(json.dumps(r) for r in rows)]
        await self.client.eval(_PUSH, 2, self.key, self.id_key, *args)

    async def query(
        self, filters: Filters, after: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[dict[str, Any]]:
        oldest = max(since, time.time() - self.retention)
        out: list[dict[str, Any]] = []
        start = 0
        while start < self.max_rows:
            chunk = await self.client.lrange(self.key, start, start + self._CHUNK - 1)
            if not chunk:
                break
            for raw in chunk:
                ident, _, data = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(" ")
                row = json.loads(data)
                row["id"] = int(ident)
                if row["id"] <= after or row["ts"] < oldest:
                    return out
                if filters.matches(row):
                    out.append(row)
                    if len(out) >= limit:
                        return out
            start += self._CHUNK
        return out

    async def close(self) -> None:
        await self.client.aclose()


def build_backend(store: StoreConfig, max_rows: int, retention: float) -> Backend:
    """The history backend of the configured store (``[store] url``)."""
    url = store.url
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        return SqliteBackend(path, max_rows, retention)
    if scheme == "memory":
        return MemoryBackend(max_rows, retention)
    from proxy.state.redis_store import make_client

    return RedisBackend(
        make_client(url, max(store.timeout, 1.0), store.password), store.prefix, max_rows, retention
    )
