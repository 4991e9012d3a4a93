"""The stage runner: I/O checks start eagerly; one that needs no waiting costs no task, the
others run concurrently under the stage budget, and failures become symbols."""

from __future__ import annotations

import asyncio
import ipaddress

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
