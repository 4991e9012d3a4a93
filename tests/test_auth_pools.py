"""The per-family thread pools of SPF, DKIM and ARC (real threads): busy threads stay bounded
whatever happens to the awaiting checks, and a saturated family answers promptly; end to end,
a sender with dead DNS does not starve a good sender's SPF and DKIM."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from proxy.auth.pools import FamilyPool, Saturated
from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate, symbols
from tests.harness.mail_auth import DkimKey, auth_zone, send_within
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


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


async def test_worker_processes_keep_their_slots_until_the_job_ends() -> None:
    """The worker processes (large messages) are bounded the same way: two jobs abandoned while
    running keep both processes counted, and the next job is refused after ``wait`` instead of
    queueing behind them."""
    from proxy.auth import procpool

    procpool.shutdown()
    try:
        await asyncio.gather(procpool.run(time.sleep, 0.3), procpool.run(time.sleep, 0.3))  # spawned
        jobs = [asyncio.ensure_future(procpool.run(time.sleep, 3)) for _ in range(2)]
        await asyncio.sleep(0.5)  # both running in the workers
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        t0 = time.monotonic()
        with pytest.raises(Saturated):
            await procpool.run(time.sleep, 0, wait=0.2)
        assert time.monotonic() - t0 < 1.0
    finally:
        procpool.shutdown()


async def test_spf_holds_no_thread_while_its_dns_is_dead(dns_server: DnsTestServer) -> None:
    """An SPF evaluation whose DNS never answers waits without a thread: with a one-thread SPF
    pool, a good sender's evaluation started meanwhile passes at once, and the dead one ends
    as temperror when its lookup times out."""
    from proxy.auth.spf import evaluate_async
    from proxy.dns.config import DnsConfig
    from proxy.dns.resolver import Resolver

    auth_zone(dns_server)
    dns_server.drop("dead.test")
    resolver = Resolver(DnsConfig(nameservers=[dns_server.address], timeout=1.5, retries=0))
    resolver.bind(asyncio.get_running_loop())
    pool = FamilyPool("spf-test", threads=1, wait=0.1)
    try:
        dead = asyncio.ensure_future(
            evaluate_async("127.0.0.9", "x@dead.test", "h.test", resolver.lookup, pool.run)
        )
        await asyncio.sleep(0.2)
        assert not dead.done()
        assert pool.busy == 0  # waiting for DNS, not in a thread
        t0 = time.monotonic()
        good = await evaluate_async(
            "127.0.0.9", "alice@sender.test", "mail.sender.test", resolver.lookup, pool.run
        )
        assert good.result == "pass"
        assert time.monotonic() - t0 < 0.5
        assert (await dead).result == "temperror"
    finally:
        await resolver.close()
        pool.shutdown()


# --- end to end: a sender with dead DNS does not starve the others ----------------------------


def dead_sender_load(port: int, stop: threading.Event, src: str) -> None:
    """One client of the dead-DNS sender: MAIL FROM a domain whose DNS never answers, again
    and again (each MAIL waits for SPF until the DNS timeout or the stage budget)."""
    import smtplib

    from tests.harness.clients import smtp

    try:
        with smtp(port, src, timeout=30) as c:
            c.ehlo("mail.dead.test")
            while not stop.is_set():
                c.docmd("MAIL FROM:<x@dead.test>")
                c.docmd("RSET")
    except (OSError, smtplib.SMTPException):
        pass


def test_dead_dns_sender_does_not_starve_a_good_senders_spf_and_dkim(
    spamgate_factory: Callable[..., Spamgate], sink: Sink, dns_server: DnsTestServer
) -> None:
    """Forty connections of a sender whose domain's DNS never answers send MAIL after MAIL
    (each SPF lookup would wait the 2 s DNS timeout; the stage budget is 1 s, so the sender
    abandons evaluations faster than they end). Meanwhile a good sender's message still gets
    SPF_PASS, DKIM_PASS and DMARC_PASS, with no STAGE_TIMEOUT: no thread waits for DNS, and
    DKIM does not queue behind SPF."""
    auth_zone(dns_server)
    key = DkimKey("sender.test").publish(dns_server)
    dns_server.drop("dead.test")
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"dns": {"timeout": "2s", "retries": 0}, "policy": {"stage_timeout": "1s"}},
    )
    stop = threading.Event()
    load = [
        threading.Thread(target=dead_sender_load, args=(sg.port, stop, f"127.0.0.{20 + i}"), daemon=True)
        for i in range(40)
    ]
    for t in load:
        t.start()
    try:
        time.sleep(4)  # the dead sender's evaluations are in flight and piling up
        good = key.sign(message(frm="alice@sender.test"))
        for _ in range(2):
            result = send_within(sg.port, good, 2.5)
            assert result.get("ok"), result
            line = sg.wait_log("transaction", client_ip="127.0.0.9")[-1]
            got = symbols(line)
            assert "STAGE_TIMEOUT" not in got, got
            assert {"SPF_PASS", "DKIM_PASS", "DMARC_PASS"} <= set(got), got
    finally:
        stop.set()
        for t in load:
            t.join(10)
