"""One computation per transaction, shared by the checks that need it.

DKIM results are needed by the ``dkim`` check, by DMARC and by the Authentication-Results
header; ARC by the ``arc`` check and DMARC. The DATA checks run concurrently, so the first one
to ask starts the computation as a task stored in ``txn.notes[key]`` and the others await the
same task. ``asyncio.shield`` keeps a check cancelled by the stage budget from cancelling the
computation others still wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" noise


def once(notes: dict[str, Any], key: str, factory: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    fut: asyncio.Future[T] | None = notes.get(key)
    if fut is None:
        fut = asyncio.ensure_future(factory())
        fut.add_done_callback(_consume)
        notes[key] = fut
    return asyncio.shield(fut)
