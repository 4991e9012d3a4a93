"""One computation per transaction, shared by the checks that need it.

DKIM results are needed by the ``dkim`` check, by DMARC and by the Authentication-Results
header; ARC by the ``arc`` check and DMARC. The DATA checks run concurrently, so the first one
to ask starts the computation, stored as a future in ``txn.notes[key]``, and the others await
the same future. It starts eagerly (:mod:`proxy.eager`): when its answers are cached it is
done before anyone waits. ``asyncio.shield`` keeps a check cancelled by the stage budget from
cancelling the computation others still wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from proxy.eager import eager

T = TypeVar("T")


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" noise


def once(notes: dict[str, Any], key: str, factory: Callable[[], Coroutine[Any, Any, T]]) -> Awaitable[T]:
    fut: asyncio.Future[T] | None = notes.get(key)
    if fut is None:
        fut = eager(factory())
        fut.add_done_callback(_consume)
        notes[key] = fut
    return asyncio.shield(fut)
