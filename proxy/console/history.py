"""The transaction history the console shows: bounded, shared by the worker processes of a host.

It lives where ``[store] url`` points: a ``history`` table in the SQLite file (one host), a
capped Redis list (a fleet), or an in-process ring (``memory://``, one process). Every backend
keeps at most ``console.history_max_rows`` rows and none older than
``console.history_retention``.

Writing never slows mail: :class:`HistoryWriter` is a ``Services.on_transaction`` callback that
turns the transaction into a small dict and appends it to a bounded queue (a full queue drops
the row and counts it); a background task writes the queue in one batch every
``console.history_flush``. A failed write is logged and counted (``spamgate_store_errors``,
backend ``history``), never raised into the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any

import structlog

from proxy.console.backends import Backend, Filters, build_backend
from proxy.model import Connection, Transaction
from proxy.observability import metrics
from proxy.state.config import StoreConfig

log = structlog.get_logger("spamgate.console")

__all__ = ["Filters", "HistoryWriter", "acquire_history", "record_of", "release_history"]

MAX_RCPTS = 50  # recipients kept per row (like the log line)
MAX_FIELD = 512  # characters kept of any one text a client controls


def _cut(text: str | None) -> str:
    return "" if text is None else text[:MAX_FIELD]


def stage_of(txn: Transaction) -> str:
    if "receive" in txn.stage_ms:
        return "data"
    return "rcpt" if txn.rcpts else "mail"


def action_of(txn: Transaction) -> str:
    """The policy's action; a transaction whose every recipient our policy refused shows that
    refusal (its verdict stays 'accept' when the client gives up with RSET or QUIT)."""
    action = txn.action or "accept"
    refused = {r.refused_by for r in txn.rcpts if r.refused_by}
    if action == "accept" and refused and not any(r.accepted for r in txn.rcpts):
        return "reject" if "reject" in refused else "tempfail"
    return action


def _would_be(txn: Transaction) -> str:
    would = txn.would_be or txn.action or "accept"
    return action_of(txn) if would == (txn.action or "accept") else would


def record_of(conn: Connection, txn: Transaction, outcome: str) -> dict[str, Any]:
    """The history row of a finished transaction (what the canonical log line says)."""
    hits = txn.notes.get("hits", txn.hits)
    return {
        "ts": time.time(),
        "ref": txn.ref,
        "ip": conn.ip_str,
        "name": _cut(conn.reverse_name),
        "helo": _cut(conn.helo),
        "sender": _cut(txn.mail_from),
        "rcpts": [
            {"to": _cut(r.address), "reply": _cut(str(r.reply)) if r.reply else ""}
            for r in txn.rcpts[:MAX_RCPTS]
        ],
        "stage": stage_of(txn),
        "outcome": outcome,
        "action": action_of(txn),
        "would_be": _would_be(txn),
        "score": round(sum(h.score for h in hits), 3),
        "symbols": [
            {"name": h.name, "score": h.score, "evidence": _cut(h.evidence), "observe": h.observe}
            for h in hits
        ],
        "reply": _cut(str(txn.final_reply)) if txn.final_reply else "",
        "downstream_reply": _cut(str(txn.downstream_reply)) if txn.downstream_reply else "",
        "size": txn.size,
        "elapsed_ms": round((time.monotonic() - txn.started) * 1000, 2),
        "pid": os.getpid(),
    }


class HistoryWriter:
    """Queues rows from the session (cheap, never blocks) and writes them in batches."""

    def __init__(self, backend: Backend, queue_max: int, flush_every: float) -> None:
        self.backend = backend
        self.queue: deque[dict[str, Any]] = deque()
        self.queue_max = queue_max
        self.flush_every = flush_every
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def on_transaction(self, conn: Connection, txn: Transaction, outcome: str) -> None:
        if len(self.queue) >= self.queue_max:
            self.dropped += 1
            metrics.history_dropped()
            return
        self.queue.append(record_of(conn, txn, outcome))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> None:
        if not self.queue:
            return
        batch = list(self.queue)
        self.queue.clear()
        try:
            await self.backend.write(batch)
            self.written += len(batch)
        except Exception as exc:
            metrics.store_error("history", "write")
            log.warning("history_write_failed", rows=len(batch), error=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.flush()


# One history per process, shared by the generations of a reload (like the store).
_shared: dict[tuple[StoreConfig, int, float], tuple[HistoryWriter, int]] = {}


def acquire_history(
    store: StoreConfig, max_rows: int, retention: float, queue: int, flush: float
) -> HistoryWriter:
    key = (store, max_rows, retention)
    found = _shared.get(key)
    writer = found[0] if found else HistoryWriter(build_backend(store, max_rows, retention), queue, flush)
    _shared[key] = (writer, (found[1] if found else 0) + 1)
    return writer


async def release_history(writer: HistoryWriter) -> None:
    for key, (w, users) in list(_shared.items()):
        if w is writer:
            if users > 1:
                _shared[key] = (w, users - 1)
                return
            del _shared[key]
            break
    await writer.close()
    await writer.backend.close()
