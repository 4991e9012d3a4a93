"""One bounded thread pool per authentication family (``spf``, ``dkim``, ``arc``).

pyspf and dkimpy are synchronous. Sharing one pool let a few senders with dead DNS (each SPF
evaluation waiting in a thread) starve every other sender's DKIM and ARC, pushing them all into
``STAGE_TIMEOUT``. Each family now has its own pool of ``[checks.<family>] threads`` threads.

Busy threads are bounded, whatever happens to the awaiting check: a slot is taken before a job
is handed to a thread and given back only when the job has *really finished* (the thread's
completion), not when the await is cancelled by the stage budget. Python cannot stop a running
thread, so a cancelled await must not free a slot for yet another job: with that, the number
of busy threads would grow without bound while abandoned jobs keep running.

When every slot is taken, :meth:`FamilyPool.run` waits at most ``thread_wait`` for one, then
raises :class:`Saturated`: the check reports its temperror promptly instead of queueing behind
jobs that may never finish in time.

Pools live in ``services.extras`` (one set per generation: a reload with new sizes builds new
pools), are created on first use and shut down with the generation (:func:`shutdown`, without
waiting: jobs in flight finish on their own).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("spamgate.auth_pool")
T = TypeVar("T")
FAMILIES = ("spf", "dkim", "arc")
EXTRAS_KEY = "auth_pools"
DEFAULT_THREADS = {"spf": 4, "dkim": 2, "arc": 2}


class Saturated(Exception):
    """No thread of the family became free within ``thread_wait``."""


class FamilyPool:
    """``threads`` slots over an executor: its own thread pool, or a given one (the worker
    processes of :mod:`proxy.auth.procpool`, with as many slots as processes)."""

    def __init__(self, family: str, threads: int, wait: float, executor: Executor | None = None) -> None:
        self.family = family
        self.threads = max(1, threads)
        self.wait = max(0.0, wait)
        self._executor = executor or ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix=f"spamgate-{family}"
        )
        self._lock = threading.Lock()
        self._busy = 0  # jobs handed to a thread and not finished yet
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.saturated = 0  # times a job was refused (observability, tests)
        self._last_warning = 0.0

    @property
    def busy(self) -> int:
        return self._busy

    def _try_acquire(self) -> bool:
        with self._lock:
            if self._busy < self.threads:
                self._busy += 1
                return True
            return False

    def _release(self, _done: Future[Any] | None = None) -> None:
        """Called from the worker thread when the job ends (or from the loop if it never ran)."""
        with self._lock:
            self._busy -= 1
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                pass

    async def _acquire(self) -> None:
        if self._try_acquire():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._busy < self.threads:
                    self._busy += 1
                    return
                self._waiters.append((loop, fut))
            remaining = deadline - loop.time()
            try:
                if remaining > 0:
                    await asyncio.wait({fut}, timeout=remaining)
            finally:
                with self._lock:
                    if (loop, fut) in self._waiters:
                        self._waiters.remove((loop, fut))
            if not fut.done() or remaining <= 0:
                self._refused()
                raise Saturated(f"{self.family}: all {self.threads} threads busy")

    def _refused(self) -> None:
        self.saturated += 1
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning(
                "auth_pool_saturated", family=self.family, threads=self.threads, refused=self.saturated
            )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the family's threads; :class:`Saturated` when none is free
        within ``thread_wait``. Cancelling the await does not free the thread's slot: only the
        job's end does."""
        await self._acquire()
        try:
            cf = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        cf.add_done_callback(self._release)
        return await asyncio.wrap_future(cf)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=False)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def pool(services: Any, family: str) -> FamilyPool:
    """The family's pool of this generation, created on first use from ``[checks.<family>]``
    ``threads`` and ``thread_wait``."""
    pools: dict[str, FamilyPool] = services.extras.setdefault(EXTRAS_KEY, {})
    found = pools.get(family)
    if found is None:
        opts = services.config.checks.get(family)
        threads = getattr(opts, "threads", DEFAULT_THREADS[family])
        wait = getattr(opts, "thread_wait", 1.0)
        found = pools[family] = FamilyPool(family, threads, wait)
    return found


def shutdown(services: Any) -> None:
    for p in services.extras.pop(EXTRAS_KEY, {}).values():
        p.shutdown()
