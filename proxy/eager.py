"""Eager start of a coroutine (Python 3.12's eager tasks, by hand for 3.11).

Most checks finish without waiting at all once their DNS and store answers are cached; a task
and a timer for each of them would cost more than the check. :func:`eager` runs a coroutine
up to its first real wait, right now: if it finishes there, the result comes back as an
already-done future (awaiting it does not suspend) and no task was made; otherwise the rest
runs as a task, exactly as if it had been a task from the start.

The first steps never run *as the caller*. While they run, ``asyncio.current_task()`` is a
stand-in for the task that will carry the rest (:class:`_Provisional`), and they run in a copy
of the caller's context. Anything those steps bind to the current task (``asyncio.timeout``,
``TaskGroup``) binds to the stand-in, which forwards ``cancel()``, ``cancelling()`` and
``uncancel()`` to that task once it exists, so such a timeout cancels the check, never the
caller. (Before, a check's ``asyncio.timeout`` armed in its first step cancelled the *session*
task when it fired: the session died without a reply and its socket stayed open.) On Python
3.12+ the native eager tasks do all this.
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
_SENT = object()  # the first yielded value was handed to the task


def eager(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    if _NATIVE:  # pragma: no cover - the project runs 3.11; 3.12 has this built in
        task: asyncio.Task[T] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return task
    return _eager_311(loop, coro)


def _eager_311(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    context = contextvars.copy_context()
    stand_in = _Provisional(loop)
    caller = asyncio.current_task(loop)
    if caller is not None:
        asyncio.tasks._leave_task(loop, caller)
    asyncio.tasks._enter_task(loop, stand_in)  # type: ignore[arg-type]
    try:
        first = context.run(coro.send, None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except Exception as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    finally:
        asyncio.tasks._leave_task(loop, stand_in)  # type: ignore[arg-type]
        if caller is not None:
            asyncio.tasks._enter_task(loop, caller)
    task = loop.create_task(_Driver(coro, first), context=context)
    stand_in.bind(task)
    return task


class _Provisional:
    """The current task while a coroutine's first steps run inline: what ``asyncio.timeout``
    and ``TaskGroup`` use of a task, forwarded to the real task once the coroutine has to wait
    (a cancellation requested before that is applied to it then)."""

    __slots__ = ("_cancels", "_loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cancels = 0
        self.task: asyncio.Task[Any] | None = None

    def bind(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        for _ in range(self._cancels):
            task.cancel()

    def cancel(self, msg: Any = None) -> bool:
        if self.task is not None:
            return self.task.cancel(msg)
        self._cancels += 1
        return True

    def cancelling(self) -> int:
        return self.task.cancelling() if self.task is not None else self._cancels

    def uncancel(self) -> int:
        if self.task is not None:
            return self.task.uncancel()
        self._cancels = max(0, self._cancels - 1)
        return self._cancels

    def done(self) -> bool:
        return self.task.done() if self.task is not None else False

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def __getattr__(self, name: str) -> Any:
        if self.task is None:
            raise AttributeError(f"{name}: the eager task does not exist yet")
        return getattr(self.task, name)


class _Driver(collections.abc.Coroutine[Any, Any, T]):
    """The coroutine the task runs: hands the task the future the half-run coroutine waits on,
    then relays what the task sends or throws, as ``await`` would have. (A class rather than an
    ``async def`` wrapper: a task cancelled before its first step throws into its coroutine,
    which must reach the half-run one.)"""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self.coro = coro
        self.first: Any = first

    def send(self, value: Any) -> Any:
        first = self.first
        if first is not _SENT:
            self.first = _SENT
            return first
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self.first = _SENT
        return self.coro.throw(typ if val is None else val)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, None, T]:  # pragma: no cover - only a task drives it
        raise TypeError("_Driver is driven by its task")
