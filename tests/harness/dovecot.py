"""A real Dovecot LMTP server (Debian's dovecot-lmtpd) on a loopback port, with its own config.

Run as root with every path in a temporary directory: a passwd-file userdb (mail stored as
``nobody``, Dovecot refuses uid 0), Maildirs, and the quota plugin. Users:

- ``bob@example.net``: delivered to ``<dir>/mail/bob@example.net/new``;
- ``full@example.net``: a 1 KiB quota, so a bigger message is refused *after* DATA
  (``552 5.2.2 ... Quota exceeded``: Dovecot checks the quota at delivery);
- anyone else: ``550 5.1.1 ... User doesn't exist`` at RCPT.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.proc import free_port, terminate, wait_port

DOVECOT = "/usr/sbin/dovecot"
CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
mail_location = maildir:{d}/mail/%u
mail_plugins = quota
lmtp_rcpt_check_quota = no
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
plugin {{
  quota = maildir:User quota
}}
"""


class Dovecot:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="spamgate-dovecot-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        d = self.dir
        os.chmod(d, 0o755)
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        (d / "mail").mkdir()
        os.chown(d / "mail", uid, gid)
        users = [
            f"bob@example.net::{uid}:{gid}::{d}/mail/bob@example.net::userdb_quota_rule=*:storage=100M",
            f"full@example.net::{uid}:{gid}::{d}/mail/full@example.net::userdb_quota_rule=*:storage=1K",
        ]
        (d / "users").write_text("\n".join(users) + "\n")
        (d / "dovecot.conf").write_text(CONF.format(d=d, port=self.port, uid=uid))
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port("127.0.0.1", self.port, timeout=15)
        except Exception:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {self.log()}") from None
        return self

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def delivered(self, user: str) -> list[bytes]:
        new = self.dir / "mail" / user / "new"
        cur = self.dir / "mail" / user / "cur"
        files = [*new.glob("*"), *cur.glob("*")] if new.exists() else []
        return [f.read_bytes() for f in sorted(files)]

    def stop(self) -> None:
        terminate(self.proc, 10)
        self.proc = None
        time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
