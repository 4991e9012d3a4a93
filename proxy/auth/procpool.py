"""A small process pool for CPU-bound verification of large messages (DKIM body hashing).

dkimpy canonicalises a body with ``re.sub`` over the whole text: C calls that hold the
interpreter lock (about 25 ms per MB each), so a thread would still stall the event loop for
a large message. Messages above ``[checks.dkim] process_pool_above`` are verified here instead;
the arguments (message bytes and prefetched keys) are pickled to the worker.

The pool uses the ``spawn`` start method (forking a process that runs an event loop and
threads is unsafe), is created on first use, and is shut down by :func:`shutdown`. Like the
thread pools (:mod:`proxy.auth.pools`), it has one slot per process, held until the job really
ends (a cancelled await does not free it): when both stay busy for ``wait``, :func:`run`
raises :class:`~proxy.auth.pools.Saturated` instead of queueing.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from proxy.auth.pools import FamilyPool

_pool: ProcessPoolExecutor | None = None
_slots: FamilyPool | None = None
WORKERS = 2


def pool() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
    return _pool


async def run(fn: Any, *args: Any, wait: float = 1.0) -> Any:
    """``fn(*args)`` in a worker process; :class:`~proxy.auth.pools.Saturated` when no process
    is free within ``wait`` seconds."""
    global _slots
    executor = pool()
    if _slots is None or _slots._executor is not executor:
        _slots = FamilyPool("process", WORKERS, wait, executor=executor)
    _slots.wait = wait
    return await _slots.run(fn, *args)


def shutdown() -> None:
    """Stop taking work; what is queued or running still completes (a reload must not cancel
    the verification of a message in flight). The next :func:`run` starts a new pool."""
    global _pool, _slots
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=False)
        _pool = None
        _slots = None
