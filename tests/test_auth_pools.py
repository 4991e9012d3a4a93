"""The per-family thread pools of SPF, DKIM and ARC (real threads): busy threads stay bounded
whatever happens to the awaiting checks, and a saturated family answers promptly."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from proxy.auth.pools import FamilyPool, Saturated


async def test_cancelled_awaits_keep_their_threads_counted() -> None:
    """Two jobs that never return are abandoned (their awaits cancelled, as the stage budget
    does): their threads stay counted, so a third job is refused with Saturated after
    thread_wait instead of starting a third thread or queueing; once the stuck jobs end, the
    pool serves again."""
    pool = FamilyPool("test", threads=2, wait=0.2)
    release = threading.Event()
    started = threading.Barrier(3)

    def stuck() -> str:
        started.wait(5)
        release.wait(10)
        return "late"

    waiters = [asyncio.ensure_future(pool.run(stuck)) for _ in range(2)]
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert pool.busy == 2  # the cancelled awaits did not free the threads still running
    t0 = time.monotonic()
    with pytest.raises(Saturated):
        await pool.run(lambda: "never")
    assert 0.15 < time.monotonic() - t0 < 1.0  # prompt: thread_wait, not a queue
    assert pool.saturated == 1
    busy_threads = [t for t in threading.enumerate() if t.name.startswith("spamgate-test")]
    assert len(busy_threads) == 2
    release.set()
    deadline = time.monotonic() + 5
    while pool.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool.busy == 0
    assert await pool.run(lambda: "served") == "served"
    pool.shutdown()


async def test_a_waiting_job_takes_the_slot_a_finishing_job_frees() -> None:
    """With the only thread busy, a job waits (up to thread_wait) and runs as soon as the
    running job ends."""
    pool = FamilyPool("test1", threads=1, wait=3.0)
    first = asyncio.ensure_future(pool.run(time.sleep, 0.2))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    assert await pool.run(lambda: 42) == 42
    assert 0.1 < time.monotonic() - t0 < 1.5
    await first
    pool.shutdown()
