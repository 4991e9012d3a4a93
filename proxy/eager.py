"""Eager start of a coroutine (Python 3.12's eager tasks; by hand on 3.11).

Most checks finish without waiting at all once their DNS and store answers are cached; making
them wait a loop iteration (and a stage timer) would cost more than the check. :func:`eager`
runs a coroutine up to its first real wait, right now: if it finishes there, the result comes
back as an already-done future (awaiting it does not suspend); otherwise the rest runs in a
task, exactly as if it had been a task from the start.

The first steps run *as that task*, not as the caller: ``asyncio.current_task()`` is the new
task and the coroutine runs in the task's own copy of the context. Anything those steps bind
to the current task (``asyncio.timeout``, ``TaskGroup``, ``wait_for`` on 3.12) therefore cancels
the check's task, never the caller. (Before, a check's ``asyncio.timeout`` armed in its first
step cancelled the *session* task when it fired: the session died without a reply and its
socket stayed open.) The price is one task object per check, scheduled once even when the
check finished inline (that step is a no-op); the caller still waits for nothing.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

_NATIVE = sys.version_info >= (3, 12)


def eager(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    if _NATIVE:  # pragma: no cover - the project runs 3.11; 3.12 has this built in
        task: asyncio.Task[T] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return task
    return _eager_311(loop, coro)


def _eager_311(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    driver: _Driver[T] = _Driver(coro)
    context = contextvars.copy_context()
    task: asyncio.Task[T] = loop.create_task(driver, context=context)
    caller = asyncio.current_task(loop)
    if caller is not None:
        asyncio.tasks._leave_task(loop, caller)
    asyncio.tasks._enter_task(loop, task)
    try:
        first = context.run(coro.send, None)
    except StopIteration as stop:
        driver.finished()
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except Exception as exc:
        driver.finished()
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    except BaseException:
        driver.finished()
        raise
    finally:
        asyncio.tasks._leave_task(loop, task)
        if caller is not None:
            asyncio.tasks._enter_task(loop, caller)
    driver.started(first)
    return task


class _Driver(collections.abc.Coroutine[Any, Any, T]):
    """The coroutine the task runs: hands the task the future the half-run coroutine waits on,
    then relays what the task sends or throws, as ``await`` would have. When the coroutine
    already finished inline, the task's one step ends at once with None (the caller has the
    result from the done future :func:`eager` returned)."""

    __slots__ = ("coro", "first", "state")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.first: Any = None
        self.state = "inline"  # -> "resuming" -> "running", or -> "finished"

    def started(self, first: Any) -> None:
        self.first, self.state = first, "resuming"

    def finished(self) -> None:
        self.state = "finished"

    def send(self, value: Any) -> Any:
        if self.state == "resuming":
            self.state = "running"
            first, self.first = self.first, None
            return first
        if self.state == "finished":
            raise StopIteration(None)
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.state == "finished":
            raise StopIteration(None)
        # Cancelled before its first step in the task: the coroutine is suspended at `first`,
        # so the cancellation goes in there, as it would have for a task started normally.
        self.state, self.first = "running", None
        exc = typ if val is None else val
        return self.coro.throw(exc)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, None, T]:  # pragma: no cover - only a task drives it
        raise TypeError("_Driver is driven by its task")
