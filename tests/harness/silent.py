"""A TCP listener that accepts connections and never answers: a scanner that hangs.

with Silent() as s:
    s.address        # "127.0.0.1:<port>"
    s.accepted       # connections accepted so far
    s.times          # when each was accepted (time.monotonic())
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class Silent:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.times: list[float] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.times.append(time.monotonic())
            self.conns.append(conn)  # kept open, never read from nor written to

    def __enter__(self) -> Silent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(2)
