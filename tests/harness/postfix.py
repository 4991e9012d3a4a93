"""A private Postfix instance on loopback for downstream tests (Debian's /usr/sbin/postfix).

``PostfixServer().start()`` writes its own main.cf/master.cf in a fresh temporary directory, takes
a free port on 127.0.0.1, accepts mail for example.test, trusts XCLIENT from 127.0.0.0/8 and
discards what it accepted. Its log goes to ``maillog`` (``maillog_file``, Postfix >= 3.4);
``stop()`` runs ``postfix stop``. Needs root (Postfix's master does).

Nothing is trusted by address (``mynetworks`` is only 127.0.0.2, an address spamgate never
uses): example.test is accepted from anyone, every other domain is refused, whether XCLIENT
was applied or not. ``xclient=False`` leaves spamgate out of ``smtpd_authorized_xclient_hosts``
(Postfix then does not offer XCLIENT).

``PostfixServer(deliver=True)`` delivers instead of discarding: every recipient of example.test
but ``nouser@`` (``550 5.1.1 ... User unknown``) lands in one Maildir; :meth:`delivered` returns
the messages once the queue is empty, for exact per-message evidence (count by Message-ID).

Senders pick slow or failing replies, for fault tests against the real thing
(``smtpd_delay_reject = no``, so sender restrictions run at MAIL):

- ``slow-mail@``, ``slow-rcpt@``, ``slow-data@``, ``slow-dot@``: the reply to MAIL, RCPT, DATA
  (before 354) or the end of data comes after ``SLOW`` seconds (Postfix's ``sleep`` restriction);
- ``tempfail-mail@``: ``451 4.3.0`` at MAIL; ``tempfail-dot@``: ``451 4.3.0`` at the end of data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.proc import free_port, wait_port

SLOW = 1  # seconds: Postfix's sleep restriction takes whole seconds

MAIN_CF = """compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
myhostname = downstream.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Never trust spamgate by address: without XCLIENT it would make Postfix an open relay.
mynetworks = 127.0.0.2/32
default_transport = discard:test
relay_transport = discard:test
smtpd_authorized_xclient_hosts = {xclient_hosts}
smtpd_delay_reject = no
smtpd_sender_restrictions = check_sender_access regexp:{etc}/mail_access
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_sender_access regexp:{etc}/rcpt_access, permit
smtpd_data_restrictions = check_sender_access regexp:{etc}/data_access
smtpd_end_of_data_restrictions = check_sender_access regexp:{etc}/dot_access
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
local_recipient_maps =
alias_maps =
alias_database =
maillog_file = {maillog}
maillog_file_prefixes = {base}
"""

DISCARD_CF = """relay_domains = example.test
"""

DELIVER_CF = """relay_domains =
virtual_mailbox_domains = example.test
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = regexp:{etc}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 1
"""

ACCESS = {
    "mail_access": f"/^slow-mail@/ sleep {SLOW}\n/^tempfail-mail@/ 451 4.3.0 Error: try again later\n",
    "rcpt_access": f"/^slow-rcpt@/ sleep {SLOW}\n",
    "data_access": f"/^slow-data@/ sleep {SLOW}\n",
    "dot_access": f"/^slow-dot@/ sleep {SLOW}\n/^tempfail-dot@/ 451 4.3.0 Error: try again later\n",
    "vmailbox": "!/^nouser@/ mail/\n",
}


class PostfixServer:
    def __init__(self, *, deliver: bool = False, xclient: bool = True) -> None:
        self.deliver = deliver
        self.xclient = xclient
        # Not under pytest's tmp_path: Postfix's daemons run as user postfix and must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="spamgate-postfix-"))
        self.dir.chmod(0o755)
        self.etc = self.dir / "etc"
        self.maillog = self.dir / "maillog"
        self.vmail = self.dir / "vmail"
        self.port = free_port()
        self.started = False

    def start(self) -> PostfixServer:
        spool, data = self.dir / "spool", self.dir / "data"
        for d in (self.etc, spool, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        main = MAIN_CF.format(
            spool=spool,
            data=data,
            maillog=self.maillog,
            base=self.dir,
            etc=self.etc,
            xclient_hosts="127.0.0.0/8" if self.xclient else "",
        )
        if self.deliver:
            self.vmail.mkdir()
            shutil.chown(self.vmail, "nobody", "nogroup")
            main += DELIVER_CF.format(vmail=self.vmail, etc=self.etc)
        else:
            main += DISCARD_CF
        (self.etc / "main.cf").write_text(main)
        for name, text in ACCESS.items():
            (self.etc / name).write_text(text)
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

    def queue_empty(self) -> bool:
        r = subprocess.run(
            ["/usr/sbin/postqueue", "-c", str(self.etc), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return r.returncode == 0 and not r.stdout.strip()

    def delivered(self, timeout: float = 30.0) -> list[bytes]:
        """Every message delivered so far (``deliver=True``), after waiting for an empty queue."""
        deadline = time.monotonic() + timeout
        while not self.queue_empty():
            if time.monotonic() > deadline:
                raise TimeoutError(f"postfix queue not empty:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        box = self.vmail / "mail"
        return [p.read_bytes() for d in ("new", "cur") for p in sorted((box / d).glob("*")) if p.is_file()]

    def stop(self) -> None:
        if self.started:
            self._postfix("stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
