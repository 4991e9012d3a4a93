"""Local delivery to Maildir: the embedded default when no downstream is configured.

Each recipient gets its own Maildir under the root (``var/mail/<address>/new/``), written the
Maildir way (tmp, fsync, rename into new) in the thread pool, so ``make run`` plus ``swaks``
works with nothing else installed, and the file is on disk before the client sees 250.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from proxy import replies
from proxy.relay.base import ClientIdentity
from proxy.replies import Reply

_counter = 0


def _safe_name(address: str) -> str:
    name = address.lower().replace("/", "_").replace("\\", "_")
    return name.lstrip(".") or "_"


def deliver(root: Path, rcpts: list[str], message: bytes) -> str:
    """Write ``message`` into each recipient's Maildir; returns the unique file name."""
    global _counter
    _counter += 1
    now = time.time()
    unique = f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{_counter}.{socket.gethostname()}"
    for rcpt in rcpts:
        box = root / _safe_name(rcpt)
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        tmp = box / "tmp" / unique
        with open(tmp, "wb") as f:
            f.write(message)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, box / "new" / unique)
    return unique


class MaildirDownstream:
    capabilities = frozenset({"8bitmime", "smtputf8", "size", "dsn", "pipelining"})

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.rcpts: list[str] = []

    async def open(self) -> Reply | None:
        return None

    async def mail(self, sender: str, params: dict[str, str | None], identity: ClientIdentity) -> Reply:
        self.rcpts = []
        return replies.SENDER_OK

    async def rcpt(self, rcpt: str, params: dict[str, str | None]) -> Reply:
        self.rcpts.append(rcpt)
        return replies.RECIPIENT_OK

    async def data(self, message: bytes) -> Reply:
        rcpts, self.rcpts = self.rcpts, []
        try:
            unique = await asyncio.to_thread(deliver, self.root, rcpts, message)
        except OSError as exc:
            return replies.local_delivery_failed(str(exc.strerror or exc))
        return replies.delivered_to_maildir(unique)

    async def rset(self) -> None:
        self.rcpts = []

    async def close(self) -> None:
        self.rcpts = []
