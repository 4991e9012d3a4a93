"""The greeting hook of a connection (:class:`proxy.checks.base.GreetingHook`): what a
connect-stage check may do before the greeting, and nothing more.

``send_teaser`` writes ``220-host banner``; ``watch_early_input`` watches the connection for a
while and keeps whatever the client sent early, so it is read as its first command. The
session reads ``teased`` to end the greeting with the code it began with.
"""

from __future__ import annotations

import asyncio
import time

READ_LIMIT = 32 * 1024


class GreetingProbe:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytearray, teaser: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = pending  # the session's buffer of input read ahead
        self._teaser = teaser
        self.teased = False

    async def send_teaser(self) -> None:
        self.teased = True
        self._writer.write(f"220-{self._teaser}\r\n".encode())
        await self._writer.drain()

    def watch_early_input(self, delay: float) -> asyncio.Future[tuple[float, bytes] | None]:
        return asyncio.ensure_future(self._watch(delay))

    async def _watch(self, delay: float) -> tuple[float, bytes] | None:
        start = time.monotonic()
        try:
            data: bytes = await asyncio.wait_for(self._reader.read(READ_LIMIT), delay)
        except TimeoutError:
            return None
        self._pending += data
        return time.monotonic() - start, data
