"""Runs the enabled checks of a stage within the stage budget and scores what they emit.

Checks without I/O (``io = False``) run inline, one after the other: no task, no timer, a few
microseconds. Checks with I/O run concurrently as tasks under one deadline
(``policy.stage_timeout``); those still running then are cancelled and reported as
``STAGE_TIMEOUT{names}``. An exception escaping a check becomes ``CHECK_ERROR{name}`` and the
stage goes on: a broken check never costs the sender more than its weight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from proxy.checks.base import Check, CheckContext, GreetingHook, Services, Stage, Symbol
from proxy.checks.core_symbols import CHECK_ERROR, STAGE_TIMEOUT
from proxy.checks.registry import CHECKS
from proxy.config.fields import ConfigError
from proxy.config.schema import Config
from proxy.eager import eager
from proxy.model import Connection
from proxy.policy.engine import Hit, Policy

log = structlog.get_logger("spamgate.pipeline")


class Pipeline:
    def __init__(self, config: Config, services: Services, policy: Policy) -> None:
        self.config = config
        self.services = services
        self.policy = policy
        self.budget = config.policy.stage_timeout
        self.checks: list[Check] = []
        self.enabled: dict[str, Check] = {}  # by name, for session hooks (pregreet)
        self.inline: dict[Stage, list[Check]] = {s: [] for s in Stage}
        self.concurrent: dict[Stage, list[Check]] = {s: [] for s in Stage}
        self.observe: set[str] = set()
        self.greeting_hooks: list[Check] = []  # connect checks that act before the greeting
        for cls in CHECKS:
            opts = config.checks[cls.name]
            if not opts.enabled:
                continue
            check = cls(opts, services)
            self.checks.append(check)
            self.enabled[cls.name] = check
            (self.concurrent if getattr(cls, "io", False) else self.inline)[cls.stage].append(check)
            if opts.mode == "observe":
                self.observe.add(cls.name)
            if cls.stage == Stage.CONNECT and cls.before_greeting is not Check.before_greeting:
                self.greeting_hooks.append(check)

    async def start(self) -> None:
        """Start every check (list files, resolvers...); a failure names the check's section."""
        for c in self.checks:
            try:
                await c.start()
            except ConfigError:
                raise
            except (OSError, ValueError) as exc:
                raise ConfigError(f"checks.{c.name}", str(exc)) from exc

    async def stop(self) -> None:
        for c in self.checks:
            try:
                await c.stop()
            except Exception:
                log.exception("check_stop_failed", check=c.name)

    async def before_greeting(self, conn: Connection, hook: GreetingHook) -> None:
        """Give the connect checks that ask for it their turn before the greeting."""
        for check in self.greeting_hooks:
            await check.before_greeting(conn, hook)

    def has_stage(self, stage: Stage) -> bool:
        return bool(self.inline[stage] or self.concurrent[stage])

    def _score(self, check: Check, symbols: Iterable[Symbol]) -> list[Hit]:
        observe = check.name in self.observe
        return [self.policy.score(s, check.name, observe=observe) for s in symbols]

    async def run(self, stage: Stage, ctx: CheckContext) -> list[Hit]:
        hits: list[Hit] = []
        for check in self.inline[stage]:
            try:
                hits += self._score(check, await check.check(ctx))
            except Exception as exc:
                log.error("check_error", check=check.name, error=repr(exc))
                hits.append(self.policy.score(CHECK_ERROR.hit(check.name), check.name, observe=False))
        concurrent = self.concurrent[stage]
        if concurrent:
            hits += await self._run_concurrent(concurrent, ctx)
        return hits

    async def _run_concurrent(self, checks: list[Check], ctx: CheckContext) -> list[Hit]:
        """Start every check eagerly: one that finishes without waiting (all its DNS and store
        answers cached) costs no task and no timer; the others continue as tasks, concurrently,
        under the stage budget. A check's steps never run as the session's task
        (:mod:`proxy.eager`), so its timeouts can only cancel the check, never the session."""
        hits: list[Hit] = []
        tasks: dict[asyncio.Future[list[Symbol]], Check] = {}
        for check in checks:
            fut = eager(check.check(ctx))
            if not fut.done():
                tasks[fut] = check
            elif (failure := fut.exception()) is not None:
                hits.append(self._error(check, failure))
            else:
                hits += self._score(check, fut.result())
        if not tasks:
            return hits
        done, pending = await asyncio.wait(tasks, timeout=self.budget)
        for task in done:
            check = tasks[task]
            failure = task.exception()
            if failure is not None:
                hits.append(self._error(check, failure))
            else:
                hits += self._score(check, task.result())
        if pending:
            for task in pending:
                task.cancel()
            names = ",".join(sorted(tasks[t].name for t in pending))
            hits.append(self.policy.score(STAGE_TIMEOUT.hit(names), "pipeline", observe=False))
        return hits

    def _error(self, check: Check, exc: BaseException) -> Hit:
        log.error("check_error", check=check.name, error=repr(exc))
        return self.policy.score(CHECK_ERROR.hit(check.name), check.name, observe=False)
