"""The stage runner: I/O checks start eagerly; one that needs no waiting costs no task, the
others run concurrently under the stage budget, and failures become symbols."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from proxy.app import build_services, load_policy_rules
from proxy.checks.base import Check, CheckContext, Stage, Symbol
from proxy.checks.connect.static_lists import IP_ALLOWLISTED
from proxy.checks.core_symbols import CHECK_ERROR
from proxy.config.loader import from_dict
from proxy.model import Connection
from proxy.policy.engine import Policy
from proxy.session.pipeline import Pipeline


class Probe(Check):
    """A connect check whose behaviour the test sets: sleep, raise, or answer at once."""

    name = "static_lists"  # borrow a real check's name: the policy knows its symbols
    stage = Stage.CONNECT
    symbols = ()
    io = True

    def __init__(self, sleep: float = 0.0, fail: bool = False) -> None:
        self.sleep, self.fail = sleep, fail
        self.cancelled = False

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        if self.fail:
            raise RuntimeError("boom")
        if self.sleep:
            try:
                await asyncio.sleep(self.sleep)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return [IP_ALLOWLISTED.hit(f"slept {self.sleep}")]


def pipeline(budget: str = "1s") -> Pipeline:
    config = from_dict({"policy": {"stage_timeout": budget}, "store": {"url": "memory://"}})
    return Pipeline(config, build_services(config), Policy(load_policy_rules(config)))


def ctx() -> CheckContext:
    ip = ipaddress.ip_address("192.0.2.1")
    return CheckContext(Stage.CONNECT, Connection("c1", ip, 25, ("192.0.2.1", 25)))


async def test_a_check_that_needs_no_waiting_runs_without_a_task() -> None:
    p = pipeline()
    before = len(asyncio.all_tasks())
    seen: list[int] = []

    class Counting(Probe):
        async def check(self, ctx: CheckContext) -> list[Symbol]:
            seen.append(len(asyncio.all_tasks()))
            return await super().check(ctx)

    hits = await p._run_concurrent([Counting()], ctx())
    assert [h.name for h in hits] == ["IP_ALLOWLISTED"]
    assert seen == [before]  # no task was created to run it
    assert len(asyncio.all_tasks()) == before


async def test_a_check_that_needs_no_waiting_finishes_without_suspending() -> None:
    """A check whose answers need no waiting is scored at once: the stage runner's coroutine
    completes on its first step (no loop iteration, no stage timer)."""
    p = pipeline()
    runner = p._run_concurrent([Probe()], ctx())
    with pytest.raises(StopIteration) as done:
        runner.send(None)
    assert [h.name for h in done.value.value] == ["IP_ALLOWLISTED"]


async def test_a_timeout_armed_in_an_eager_step_cancels_the_check_not_the_caller() -> None:
    """A check that arms asyncio.timeout before its first wait (as the pass cache does) and
    overruns it gets its own TimeoutError; the task running the stage is never cancelled."""
    p = pipeline("2s")
    outcome: list[str] = []

    class Bounded(Probe):
        async def check(self, ctx: CheckContext) -> list[Symbol]:
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(5)
            except TimeoutError:
                outcome.append("timeout")
            return [IP_ALLOWLISTED.hit("bounded")]

    stage = asyncio.ensure_future(p._run_concurrent([Bounded()], ctx()))
    hits = await asyncio.wait_for(stage, 3)
    assert outcome == ["timeout"]
    assert [h.evidence for h in hits] == ["bounded"]
    assert not stage.cancelled()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_task_group_opened_in_an_eager_step_cancels_the_check_not_the_caller() -> None:
    """A check whose first step opens a TaskGroup whose child fails: the group cancels the
    check (its parent), which becomes CHECK_ERROR; the stage is not cancelled."""
    p = pipeline("2s")

    class Grouped(Probe):
        async def check(self, ctx: CheckContext) -> list[Symbol]:
            async def boom() -> None:
                await asyncio.sleep(0.01)
                raise ValueError("child")

            async with asyncio.TaskGroup() as tg:
                tg.create_task(boom())
                await asyncio.sleep(5)
            return []

    stage = asyncio.ensure_future(p._run_concurrent([Grouped()], ctx()))
    hits = await asyncio.wait_for(stage, 3)
    assert [h.name for h in hits] == [CHECK_ERROR.name]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_eager_steps_never_run_as_the_caller() -> None:
    """Inside the eagerly run steps, current_task() is not the caller (a stand-in for the
    check's task, which carries the later steps), and context variables set there stay in the
    check (the caller's are untouched)."""
    import contextvars

    from proxy.eager import eager

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller")
    me = asyncio.current_task()
    seen: list[object] = []

    async def step() -> str:
        seen.append(asyncio.current_task())
        var.set("check")
        await asyncio.sleep(0.01)
        seen.append(asyncio.current_task())
        return var.get()

    fut = eager(step())
    assert asyncio.current_task() is me
    assert var.get() == "caller"
    assert await fut == "check"
    assert seen[1] is fut
    assert seen[0] is not me
    assert seen[0].cancelling() == 0  # type: ignore[union-attr]


async def test_waiting_checks_run_concurrently_and_late_ones_are_cancelled() -> None:
    p = pipeline("300ms")
    quick, slow, slower = Probe(0.1), Probe(0.15), Probe(5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    hits = await p._run_concurrent([quick, slow, slower], ctx())
    assert loop.time() - t0 < 0.6  # concurrent (0.15 s), bounded by the budget (0.3 s)
    assert sorted(h.evidence for h in hits if h.name == "IP_ALLOWLISTED") == ["slept 0.1", "slept 0.15"]
    assert any(h.name == "STAGE_TIMEOUT" for h in hits)
    await asyncio.sleep(0)
    assert slower.cancelled
    assert not quick.cancelled


async def test_errors_before_or_after_waiting_become_check_error() -> None:
    p = pipeline()

    class LateFailure(Probe):
        async def check(self, ctx: CheckContext) -> list[Symbol]:
            await asyncio.sleep(0.01)
            raise ValueError("late")

    hits = await p._run_concurrent([Probe(fail=True), LateFailure()], ctx())
    assert [h.name for h in hits] == [CHECK_ERROR.name, CHECK_ERROR.name]
