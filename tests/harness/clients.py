"""SMTP clients for the tests: smtplib bound to any 127.x.y.z, raw sockets, swaks."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time


def smtp(
    port: int, source_ip: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10
) -> smtplib.SMTP:
    """An smtplib client connected from ``source_ip`` (any 127.x.y.z plays another sender)."""
    return smtplib.SMTP(host, port, timeout=timeout, source_address=(source_ip, 0))


class Raw:
    """A raw socket client for protocol-abuse cases: send bytes, read replies."""

    def __init__(
        self, port: int, source_ip: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source_ip, 0))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """Read one complete (possibly multi-line) reply; '' when the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "\n".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closed the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def swaks(port: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("swaks")
    assert exe, "swaks is not installed (make test installs it)"
    return subprocess.run(
        [exe, "--server", f"127.0.0.1:{port}", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def message(
    subject: str = "test",
    body: str = "Hello.\r\n",
    frm: str = "alice@sender.test",
    to: str = "bob@example.test",
    extra: str = "",
) -> bytes:
    return (
        f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\n{extra}\r\n{body}"
    ).encode()
