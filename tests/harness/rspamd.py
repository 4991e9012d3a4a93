"""A real ``rspamd`` (Debian ``rspamd``) for tests, started once per test session.

Its own configuration directory: the shipped rules (``$CONFDIR`` = /etc/rspamd) with one
``normal`` worker on a free loopback port and nothing else (no controller, no proxy, no
fuzzy storage, no Redis), DNS pointed at a dead loopback port (every lookup times out fast;
nothing leaves the machine), fuzzy checks off (they resolve public servers at start), a tiny
public-suffix list (compiling the full one takes 15 s or more), and ``milter_headers`` adding
``X-Spamd-Result`` and ``X-Rspamd-Queue-Id`` for every client, local ones included. GTUBE gets ``reject``.

rs = Rspamd(tmp_path).start()    # one or two seconds
rs.address                       # "127.0.0.1:<port>"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.proc import free_port, spawn_until_ready, terminate

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"

_MAIN = """\
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }
worker "normal" {
    bind_socket = "127.0.0.1:%(port)d";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}
"""
_OPTIONS = """\
dns { nameserver = ["127.0.0.1:%(dns_port)d"]; timeout = 0.2s; retransmits = 1; }
url_tld = "%(dir)s/tld.dat";
"""
_MILTER = """\
use = ["x-spamd-result", "x-rspamd-queue-id"];
skip_local = false;
skip_authenticated = false;
"""


class Rspamd:
    def __init__(self, workdir: Path, dns_port: int = 1) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dns_port = dns_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        local = self.dir / "local.d"
        local.mkdir(exist_ok=True)
        values = {"port": self.port, "dns_port": self.dns_port, "dir": str(self.dir)}
        (self.dir / "rspamd.conf").write_text(_MAIN % values)
        (local / "options.inc").write_text(_OPTIONS % values)
        (local / "fuzzy_check.conf").write_text("enabled = false;\n")
        (local / "milter_headers.conf").write_text(_MILTER)
        (self.dir / "tld.dat").write_text("com\norg\nnet\ntest\nexample\n")
        return self.dir / "rspamd.conf"

    def start(self) -> Rspamd:
        conf = self.write_config()
        d = str(self.dir)
        args = [RSPAMD, "-f", "-c", str(conf), "--var=CONFDIR=/etc/rspamd", f"--var=LOCAL_CONFDIR={d}"]
        args += [f"--var=DBDIR={d}", f"--var=RUNDIR={d}", f"--var=LOGDIR={d}"]
        if os.geteuid() == 0:
            args += ["-i", "-u", "root", "-g", "root"]
        self.proc = spawn_until_ready("rspamd", args, self.dir / "rspamd.out", self.ping, 90)
        return self

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/ping", timeout=2) as r:  # noqa: S310
                return bool(r.read().strip() == b"pong")
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.proc, 15)
        self.proc = None


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    rs = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    yield rs
    rs.stop()
