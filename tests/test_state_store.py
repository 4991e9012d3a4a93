"""Store backends against the same contract: memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from proxy.state import Store, StoreError, build_store
from proxy.state.config import StoreConfig
from proxy.state.memory import MemoryStore
from proxy.state.pass_cache import StorePassCache
from proxy.state.redis_store import RedisStore, parse_hosts
from proxy.state.sqlite_store import SqliteStore
from tests.harness.proc import ROOT, free_port
from tests.harness.redis_server import RedisCluster, RedisSentinel, RedisServer


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("redis_server").url
    s = build_store(StoreConfig(url=url, timeout=2.0))
    assert s.backend == request.param
    yield s
    await s.close()


async def test_get_set_delete_expire(store: Store) -> None:
    assert await store.get("k") is None
    await store.set("k", "v", 0.3)
    assert await store.get("k") == "v"
    await store.delete("k")
    assert await store.get("k") is None
    await store.set("k", "v2", 0.3)
    await asyncio.sleep(0.45)
    assert await store.get("k") is None
    assert await store.ping()


async def test_incr_lives_from_first_increment(store: Store) -> None:
    assert await store.incr("c", 0.4) == 1
    assert await store.incr("c", 0.4) == 2
    await asyncio.sleep(0.5)
    assert await store.incr("c", 0.4) == 1


async def test_window_counts_and_reads(store: Store) -> None:
    for i in range(1, 6):
        assert await store.window_hit("w", 60) >= i  # exact, unless a minute boundary passed
    assert await store.window_hit("w", 60, 0) >= 5
    assert await store.window_hit("w", 60, 0) < 10
    assert await store.window_hit("other", 60, 0) == 0


async def test_window_hits_counts_several_windows_at_once(store: Store) -> None:
    assert await store.window_hits([("a", 60), ("b", 60)]) == [1, 1]
    assert await store.window_hits([("a", 60), ("c", 30)]) == [2, 1]
    assert await store.window_hit("b", 60, 0) == 1
    assert await store.window_hits([]) == []


async def test_window_slides(store: Store) -> None:
    # 0.5 s window: after two full windows everything has slid out.
    for _ in range(4):
        await store.window_hit("s", 0.5)
    assert await store.window_hit("s", 0.5, 0) >= 1
    await asyncio.sleep(1.05)
    assert await store.window_hit("s", 0.5, 0) == 0


async def test_slots(store: Store) -> None:
    assert await store.slot_acquire("conc", "a", 2, 10) == (True, 1)
    assert await store.slot_acquire("conc", "b", 2, 10) == (True, 2)
    assert await store.slot_acquire("conc", "c", 2, 10) == (False, 2)
    assert await store.slot_acquire("conc", "a", 2, 10) == (True, 2)  # re-acquire is a refresh
    await store.slot_release("conc", "a")
    assert await store.slot_acquire("conc", "c", 2, 10) == (True, 2)


async def test_slots_expire_unless_refreshed(store: Store) -> None:
    assert (await store.slot_acquire("conc", "dead", 1, 0.6))[0]
    assert (await store.slot_acquire("conc2", "live", 1, 0.6))[0]
    await asyncio.sleep(0.35)
    await store.slot_refresh("conc2", "live", 0.6)
    await asyncio.sleep(0.35)
    assert await store.slot_acquire("conc", "new", 1, 0.6) == (True, 1)  # the dead slot expired
    assert await store.slot_acquire("conc2", "new", 1, 0.6) == (False, 1)  # refreshed, still held


async def test_greylist_states(store: Store) -> None:
    assert await store.greylist("t", 0.4, 0.6, 5) == ("new", pytest.approx(0.4))
    state, wait = await store.greylist("t", 0.4, 0.6, 5)
    assert state == "early"
    assert 0 < wait <= 0.4
    await asyncio.sleep(0.45)
    assert (await store.greylist("t", 0.4, 0.6, 5))[0] == "pass"
    assert (await store.greylist("t", 0.4, 0.6, 5))[0] == "known"
    assert (await store.greylist("t2", 0.4, 0.6, 5))[0] == "new"


async def test_greylist_retry_too_late_starts_anew(store: Store) -> None:
    assert (await store.greylist("late", 0.2, 0.2, 5))[0] == "new"
    await asyncio.sleep(0.5)
    assert (await store.greylist("late", 0.2, 0.2, 5))[0] == "new"


async def test_decay(store: Store) -> None:
    assert await store.decay("r", 0, 0, 1.0, 60) == (0, 0)
    await store.decay("r", 4, 0, 1.0, 60)
    a, r = await store.decay("r", 0, 2, 1.0, 60)
    assert a == pytest.approx(4, rel=0.1)
    assert r == pytest.approx(2, rel=0.01)
    await asyncio.sleep(1.0)
    a, r = await store.decay("r", 0, 0, 1.0, 60)
    assert 1.0 < a < 2.05  # halved after one half-life (less if the sleep overran)
    assert a == pytest.approx(2 * r, rel=0.05)


async def test_pass_cache(store: Store) -> None:
    pc = StorePassCache(store)
    assert not await pc.passed("192.0.2.1", "dnsbl")
    await pc.remember("192.0.2.1", "dnsbl", 60)
    assert await pc.passed("192.0.2.1", "dnsbl")
    assert not await pc.passed("192.0.2.1", "rdns")
    assert not await pc.passed("192.0.2.2", "dnsbl")


async def test_redis_down_raises_quickly_and_pass_cache_survives() -> None:
    s = build_store(StoreConfig(url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.3))
    t0 = time.monotonic()
    with pytest.raises(StoreError):
        await s.greylist("t", 1, 1, 1)
    assert not await s.ping()
    assert not await StorePassCache(s).passed("192.0.2.1", "x")
    await StorePassCache(s).remember("192.0.2.1", "x", 10)
    assert time.monotonic() - t0 < 2.5
    await s.close()


async def test_redis_hung_times_out(redis_server: RedisServer) -> None:
    s = build_store(StoreConfig(url=redis_server.url, timeout=0.3))
    await s.set("k", "v", 10)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError):
            await s.get("k")
        assert time.monotonic() - t0 < 1.0
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # It reconnects by itself.
    for _ in range(20):
        try:
            assert await s.get("k") == "v"
            break
        except StoreError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("store did not recover")
    await s.close()


async def test_redis_keys_have_ttl(redis_server: RedisServer) -> None:
    s = build_store(StoreConfig(url=redis_server.url, timeout=2))
    await s.window_hit("w", 60)
    await s.window_hit("read-only", 60, 0)  # a read writes nothing
    await s.decay("read-only-too", 0, 0, 60, 600)
    await s.incr("c", 60)
    await s.set("k", "v", 60)
    await s.slot_acquire("conc", "a", 3, 60)
    await s.greylist("g", 60, 60, 600)
    await s.decay("r", 1, 0, 60, 600)
    keys = redis_server.cli("KEYS", "sg:*").split()
    assert len(keys) == 6
    for k in keys:
        assert int(redis_server.cli("PTTL", k)) > 0, k
    await s.close()


def test_multi_key_operations_share_a_cluster_slot() -> None:
    s = RedisStore("redis://127.0.0.1:1/0", 0.1)
    keys, _ = s.window_keys("rl|messages|ip|192.0.2.1", 60, time.time())
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert keys[0].startswith("sg:{rl|messages|ip|192.0.2.1}:")


def test_urls() -> None:
    assert isinstance(build_store(StoreConfig(url="memory://")), MemoryStore)
    sq = build_store(StoreConfig(url="sqlite:///var/x.db"))
    assert isinstance(sq, SqliteStore)
    assert sq.path == "var/x.db"
    sq2 = build_store(StoreConfig(url="sqlite:////tmp/abs.db"))
    assert isinstance(sq2, SqliteStore)
    assert sq2.path == "/tmp/abs.db"
    assert build_store(StoreConfig(url="rediss://h:6380/1")).backend == "redis"
    assert build_store(StoreConfig(url="redis+sentinel://a:26379,b:26380/mymaster")).backend == "sentinel"
    assert build_store(StoreConfig(url="redis+cluster://a:7000,b:7001")).backend == "cluster"
    with pytest.raises(ValueError, match="unsupported"):
        build_store(StoreConfig(url="mysql://x"))
    assert parse_hosts(":secret@a:1,[::1]:2,c", 26379) == ("secret", [("a", 1), ("::1", 2), ("c", 26379)])


async def test_memory_is_bounded() -> None:
    s = MemoryStore(1.0, max_keys=100)
    for i in range(350):
        await s.set(f"k{i}", "v", 60)
    assert len(s.kv.data) <= 100
    assert await s.get("k349") == "v"


async def test_sqlite_purges_expired_rows(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "p.db"), 1.0)
    await s.set("a", "1", 0.1)
    await s.set("b", "1", 60)
    await asyncio.sleep(0.2)
    assert await s.purge() == 1
    assert await s.get("b") == "1"
    await s.close()


async def test_sqlite_group_commit(tmp_path: Path) -> None:
    """Concurrent operations share transactions, stay atomic, and one bad row fails only its caller."""
    s = SqliteStore(str(tmp_path / "g.db"), 5.0)
    counts = await asyncio.gather(*(s.incr("n", 600) for _ in range(300)))
    assert sorted(counts) == list(range(1, 301))  # no lost update inside a group
    assert s.transactions <= 30, s.transactions  # 300 operations, a handful of groups
    before = s.transactions
    await s.incr("n", 600)
    assert s.transactions == before + 1  # a lone operation is its own group, not delayed

    db = sqlite3.connect(tmp_path / "g.db")
    db.execute("INSERT INTO kv VALUES ('sg:bad', 'not json', 9e9)")
    db.commit()
    db.close()
    out = await asyncio.gather(s.get("bad"), s.incr("n", 600), s.set("k", "v", 60), return_exceptions=True)
    assert isinstance(out[0], StoreError)
    assert out[1] == 302
    assert await s.get("k") == "v"
    await s.close()


_WORKER = """
import asyncio, sys
from proxy.state.sqlite_store import SqliteStore
async def main():
    s = SqliteStore(sys.argv[1], 5.0)
    for _ in range(150):
        await s.incr("shared", 600)
        await s.slot_acquire("slots", sys.argv[2] + str(_ % 3), 100, 600)
    await s.close()
asyncio.run(main())
"""


async def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, db, name], env=env) for name in ("a", "b", "c")]
    for p in procs:
        assert await asyncio.to_thread(p.wait, 60) == 0
    s = SqliteStore(db, 5.0)
    assert await s.incr("shared", 600) == 451  # no lost update across processes
    assert (await s.slot_acquire("slots", "z", 100, 600)) == (True, 10)
    await s.close()


async def _contract(s: Store) -> None:
    """A condensed run of every operation (for the Sentinel and Cluster deployments)."""
    assert await s.ping()
    await s.set("k", "v", 10)
    assert await s.get("k") == "v"
    assert await s.incr("c", 10) == 1
    for i in range(1, 4):
        assert await s.window_hit(f"w{i}", 60) >= 1
        assert await s.window_hit("w", 60) >= i
    assert await s.slot_acquire("conc", "a", 1, 10) == (True, 1)
    assert await s.slot_acquire("conc", "b", 1, 10) == (False, 1)
    await s.slot_release("conc", "a")
    assert await s.slot_acquire("conc", "b", 1, 10) == (True, 1)
    assert (await s.greylist("t", 0.3, 5, 60))[0] == "new"
    assert (await s.greylist("t", 0.3, 5, 60))[0] == "early"
    await asyncio.sleep(0.35)
    assert (await s.greylist("t", 0.3, 5, 60))[0] == "pass"
    await s.decay("r", 3, 1, 3600, 60)
    a, r = await s.decay("r", 0, 0, 3600, 60)
    assert (round(a), round(r)) == (3, 1)


async def test_sentinel_deployment(tmp_path: Path) -> None:
    master = RedisServer(tmp_path / "master").start()
    sentinel = RedisSentinel(tmp_path / "sentinel", master).start()
    try:
        s = build_store(StoreConfig(url=f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster", timeout=2))
        assert s.backend == "sentinel"
        await _contract(s)
        assert master.cli("GET", "sg:k") == "v"  # it wrote to the master the sentinel named
        await s.close()
    finally:
        sentinel.stop()
        master.stop()


async def test_cluster_deployment(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        s = build_store(StoreConfig(url=cluster.url, timeout=2))
        assert s.backend == "cluster"
        await _contract(s)
        # The keys are spread over the masters (so the hash tags, not luck, kept scripts working).
        counts = [int(n.cli("DBSIZE") or 0) for n in cluster.nodes]
        assert sum(1 for c in counts if c) >= 2, counts
        await s.close()
    finally:
        cluster.stop()


class _TlsRedis(RedisServer):
    def __init__(self, workdir: Path, ca: Path, cert: Path, key: Path) -> None:
        super().__init__(workdir)
        self.ca = ca
        self.extra = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
        self.extra += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]

    def cli(self, *args: str, port: int | None = None) -> str:
        return super().cli("--tls", "--cacert", str(self.ca), *args, port=port)


async def test_rediss_tls(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server = _TlsRedis(tmp_path / "tls", ca_path, cert_path, key_path).start()
    try:
        s = build_store(
            StoreConfig(url=f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca_path}", timeout=2)
        )
        await _contract(s)
        await s.close()
        # A client that does not trust the CA is refused: the connection really is TLS.
        bad = build_store(StoreConfig(url=f"rediss://127.0.0.1:{server.port}/0", timeout=1))
        with pytest.raises(StoreError):
            await bad.get("k")
        await bad.close()
    finally:
        server.stop()


async def test_down_backoff_fails_fast_then_retries(redis_server: RedisServer) -> None:
    s = build_store(StoreConfig(url=redis_server.url, timeout=0.3, down_backoff=0.8))
    await s.set("k", "v", 30)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError):
            await s.get("k")
        assert 0.25 < time.monotonic() - t0 < 1.0  # the first call waits the timeout
        t1 = time.monotonic()
        for _ in range(10):
            with pytest.raises(StoreError, match="store down"):
                await s.get("k")
        assert time.monotonic() - t1 < 0.1  # the next ones do not
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    await asyncio.sleep(0.85)
    for _ in range(20):  # after the backoff it tries the store again, and it is back
        try:
            assert await s.get("k") == "v"
            break
        except StoreError:
            await asyncio.sleep(0.2)
    else:
        raise AssertionError("store did not recover")
    await s.close()
