"""A real ``rbldnsd`` (Debian package) serving zone files on a loopback UDP port.

rb = Rbldnsd(tmp_path, {"feed.test": zone_path}).start()
rb.address      # "127.0.0.1:<port>" for [dns] nameservers
rb.stop()

It re-reads a changed zone file every second (``-c 1``); started in the foreground (``-n``),
no chroot; as root it drops to the package's ``rbldns`` user, so zone files must be readable
by others: keep them in :func:`public_dir`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.harness.proc import free_port, terminate

RBLDNSD = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def public_dir() -> Path:
    """A fresh world-readable directory for zone files (rbldnsd runs as another user; pytest's
    temp dirs are private). The caller removes it (``shutil.rmtree``)."""
    d = Path(tempfile.mkdtemp(prefix="spamgate-rbldnsd-"))
    d.chmod(0o755)
    return d


def free_udp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Rbldnsd:
    def __init__(self, workdir: Path, zones: dict[str, Path]) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zones = zones
        self.port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Rbldnsd:
        args = [RBLDNSD, "-n", "-c", "1", "-b", f"127.0.0.1/{self.port}", "-w", str(self.dir)]
        if os.geteuid() == 0:  # it refuses to run as root: the package's user reads the zones
            args += ["-u", "rbldns" if _user_exists("rbldns") else "nobody"]
        args += [f"{zone}:ip4set:{path}" for zone, path in self.zones.items()]
        with open(self.dir / "rbldnsd.stderr", "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        zone = next(iter(self.zones))
        deadline = time.monotonic() + 10
        while self.query(f"2.0.0.127.{zone}") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rbldnsd did not start: {(self.dir / 'rbldnsd.stderr').read_text()}")
            time.sleep(0.1)
        return self

    def query(self, name: str) -> list[str] | None:
        """A records of ``name`` (empty when NXDOMAIN), or None when there was no answer."""
        q = dns.message.make_query(name, "A")
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
        except (OSError, dns.exception.Timeout):
            return None
        if r.rcode() != dns.rcode.NOERROR:
            return []
        return [rr.to_text() for rrset in r.answer for rr in rrset]

    def stop(self) -> None:
        terminate(self.proc, 5)
        self.proc = None
