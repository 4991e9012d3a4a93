"""Eager start of a coroutine (Python 3.12's eager tasks, by hand for 3.11).

Most checks finish without waiting at all once their DNS and store answers are cached; a task
and a timer for each of them would cost more than the check. :func:`eager` runs a coroutine
up to its first real wait, right now: if it finishes there, the result comes back as an
already-done future (awaiting it does not suspend); otherwise the rest runs as a task, exactly
as if it had been a task from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def eager(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    try:
        first = coro.send(None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except Exception as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return asyncio.ensure_future(_resume(coro, first))


async def _resume(coro: Coroutine[Any, Any, T], first: Any) -> T:
    return await _Continue(coro, first)


class _Continue(Generic[T]):
    """Hands the driving task the future a half-run coroutine waits on, then relays what the
    task sends or throws, as ``await`` would have."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, T]:
        coro, yielded = self.coro, self.first
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and errors go into the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
