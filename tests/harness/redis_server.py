"""A real ``redis-server`` for tests: a free loopback port, a temp dir, stopped after the test.

rs = RedisServer(tmp_path).start()
rs.url                   # "redis://127.0.0.1:<port>/0"
rs.stop(); rs.start()    # kill and restart on the same port (store outage tests)
rs.cli("KEYS", "*")      # redis-cli against it

Also: a Sentinel watching it (:class:`RedisSentinel`) and the ``redis_server`` fixture.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.proc import free_port, wait_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [
            REDIS,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            *self.extra,
        ]

    def start(self) -> RedisServer:
        log = open(self.dir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_port("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args: str, port: int | None = None) -> str:
        out = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port or self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip()


class RedisSentinel(RedisServer):
    """``redis-server --sentinel`` monitoring one master as service ``mymaster``."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        super().__init__(workdir)
        self.master = master

    def args(self) -> list[str]:
        conf = self.dir / f"sentinel-{self.port}.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 5000\n"
        )
        return [REDIS, str(conf), "--sentinel"]

    def start(self) -> RedisSentinel:
        super().start()
        deadline = time.monotonic() + 10
        while not self.cli("SENTINEL", "get-master-addr-by-name", "mymaster").endswith(str(self.master.port)):
            if time.monotonic() > deadline:
                raise RuntimeError("sentinel does not know the master")
            time.sleep(0.05)
        return self


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    rs = RedisServer(tmp_path / "redis").start()
    yield rs
    rs.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    import random
    import socket

    for _ in range(200):
        p = random.randint(20000, 29999)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        return p
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """Three masters (``--cluster-enabled``) joined with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = []
        for i in range(size):
            port = cluster_port()
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            extra += ["--cluster-node-timeout", "2000"]
            self.nodes.append(RedisServer(workdir / f"node{i}", port=port, extra=extra))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        for n in self.nodes:
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
