"""A real ``clamd`` (Debian ``clamav-daemon``) for tests: foreground, TCP on a free loopback
port, a database of one custom signature the harness writes (the official databases cannot be
downloaded here, and EICAR is not detected without them), ``StreamMaxLength`` set.

cd = Clamd(tmp_path).start()     # about a second
cd.address                       # "127.0.0.1:<port>" (also a Unix socket: cd.socket)
VIRUS                            # bytes that the signature matches, anywhere in a decoded part
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

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
VIRUS = b"SPAMGATE-TEST-VIRUS-4f1c9e2a-NOT-A-REAL-ONE"
SIGNATURE = "Spamgate.Test.Virus"
STREAM_MAX = 1024 * 1024


class Clamd:
    def __init__(self, workdir: Path, stream_max: int = STREAM_MAX) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.stream_max = stream_max
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.dir / "clamd.sock"

    def write_config(self) -> Path:
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        # .ndb: Name:TargetType:Offset:HexSignature (0 = any file, * = anywhere)
        (db / "spamgate-test.ndb").write_text(f"{SIGNATURE}:0:*:{VIRUS.hex()}\n")
        conf = self.dir / "clamd.conf"
        lines = [
            "Foreground yes",
            f"TCPSocket {self.port}",
            "TCPAddr 127.0.0.1",
            f"LocalSocket {self.socket}",
            f"DatabaseDirectory {db}",
            f"LogFile {self.dir / 'clamd.log'}",
            f"PidFile {self.dir / 'clamd.pid'}",
            f"StreamMaxLength {self.stream_max}",
            "MaxThreads 4",
            "SelfCheck 0",
        ]
        if os.geteuid() == 0:
            lines.append("User root")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Clamd:
        conf = self.write_config()
        self.proc = spawn_until_ready(
            "clamd", [CLAMD, "-c", str(conf)], self.dir / "clamd.out", self.ping, 30, interval=0.05
        )
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"zPING\0")
                return s.recv(16) == b"PONG\0"
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.proc, 10)
        self.proc = None


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    cd = Clamd(tmp_path_factory.mktemp("clamd")).start()
    yield cd
    cd.stop()
