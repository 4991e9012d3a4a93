"""A private Postfix instance on loopback for downstream tests (Debian's /usr/sbin/postfix).

``PostfixServer().start()`` writes its own main.cf/master.cf in a fresh temporary directory, takes
a free port on 127.0.0.1, accepts mail for example.test from 127.0.0.0/8, trusts XCLIENT from
127.0.0.0/8 and discards what it accepted. Its log goes to ``maillog`` (``maillog_file``,
Postfix >= 3.4); ``stop()`` runs ``postfix stop``. Needs root (Postfix's master does).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.proc import free_port, wait_port

MAIN_CF = """compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
myhostname = downstream.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
default_transport = discard:test
relay_transport = discard:test
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
local_recipient_maps =
alias_maps =
alias_database =
maillog_file = {maillog}
maillog_file_prefixes = {base}
"""


class PostfixServer:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: Postfix's daemons run as user postfix and must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="spamgate-postfix-"))
        self.dir.chmod(0o755)
        self.etc = self.dir / "etc"
        self.maillog = self.dir / "maillog"
        self.port = free_port()
        self.started = False

    def start(self) -> PostfixServer:
        spool, data = self.dir / "spool", self.dir / "data"
        for d in (self.etc, spool, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(spool=spool, data=data, maillog=self.maillog, base=self.dir)
        )
        out = []
        for raw in Path("/etc/postfix/master.cf").read_text().splitlines():
            line = raw
            if re.match(r"^smtp\s+inet\s", line):
                line = re.sub(r"^smtp(\s)", f"127.0.0.1:{self.port}\\1", line)
            f = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(f) >= 8:
                f[4] = "n"  # no chroot: the private queue has no jail
                line = "  ".join(f[:8]) + ((" " + " ".join(f[8:])) if len(f) > 8 else "")
            out.append(line)
        (self.etc / "master.cf").write_text("\n".join(out) + "\n")
        self._postfix("start")
        self.started = True
        wait_port("127.0.0.1", self.port, timeout=20)
        return self

    def _postfix(self, verb: str) -> None:
        r = subprocess.run(
            ["/usr/sbin/postfix", "-c", str(self.etc), verb],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if r.returncode != 0 and verb != "stop":
            raise RuntimeError(f"postfix {verb} failed: {r.stderr}")

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not in postfix log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.started:
            self._postfix("stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
