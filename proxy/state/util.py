"""Helpers the store's users share: client netblocks and fire-and-forget store updates."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine
from typing import Any


def netblock(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int) -> str:
    """The client's network: ``192.0.2.0/24`` for an IPv4 address with ``v4 = 24``."""
    prefix = v4 if ip.version == 4 else v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class Background:
    """Keeps references to fire-and-forget tasks (store updates from sync callbacks)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: StoreError is already logged by the store

    async def drain(self, wait: float = 2.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=wait)
