"""Reading one DATA stream off the socket under the worker's message byte budget.

Every session of a worker counts the message bytes it holds in ``Runtime.inflight``; past
``limits.inflight_bytes`` a session stops holding its message (it reads on to the end of
data, so the dialogue stays in step) and the client gets 451 4.3.1: a flood of large
messages costs the senders a retry, never the worker its memory.
"""

from __future__ import annotations

import asyncio

from proxy.session.runtime import Runtime
from proxy.smtp.data import DataReader

CHUNK = 64 * 1024


class Intake:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.held = 0  # bytes this session counts against the budget

    def _count(self, held: int) -> None:
        self.rt.inflight += held - self.held
        self.held = held

    async def read(self, stream: asyncio.StreamReader, first: bytes, limit: int, budget: int) -> DataReader:
        """Read up to CRLF.CRLF (``first``: bytes already read ahead); ``leftover`` is what follows."""
        reader = DataReader(limit)
        chunk = first
        while not reader.feed(chunk):
            self._count(reader.held)
            if self.rt.inflight > budget and not reader.over_budget:
                reader.stop_holding()
                self._count(reader.held)
            chunk = await stream.read(CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
        self._count(len(reader.message))
        return reader

    def release(self) -> None:
        """The message is relayed or refused: its bytes no longer count."""
        self._count(0)
