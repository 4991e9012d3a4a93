"""A real SpamAssassin ``spamd`` (Debian ``spamd`` + ``spamassassin``) for tests: a free
loopback port, local tests only (``-L``: no DNS, no network), no user configuration, the rules
Debian ships. GTUBE scores about 1000.

sd = Spamd(tmp_path).start()     # a second or two
sd.address                       # "127.0.0.1:<port>"
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.proc import free_port, spawn_until_ready, terminate

SPAMD = shutil.which("spamd") or "/usr/sbin/spamd"


class Spamd:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Spamd:
        args = [SPAMD, "-L", "-x", "-i", self.address, "-A", "127.0.0.1", "-H", str(self.dir)]
        args += [
            "-m",
            "2",
            "--min-spare=1",
            "--max-spare=2",
            "-s",
            "stderr",
            "-r",
            str(self.dir / "spamd.pid"),
        ]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # spamd refuses to run its children as root
        self.proc = spawn_until_ready("spamd", args, self.dir / "spamd.log", self.ping, 60)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b"PONG" in s.recv(64)
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.proc, 10)
        self.proc = None


@pytest.fixture(scope="session")
def spamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    sd = Spamd(tmp_path_factory.mktemp("spamd")).start()
    yield sd
    sd.stop()
