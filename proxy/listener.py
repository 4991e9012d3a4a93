"""The listening side: sockets, worker processes, signals.

- Several listen addresses (IPv4 and IPv6); with ``workers > 1`` each worker process binds
  its own sockets with SO_REUSEPORT and the kernel spreads connections between them. The
  parent only supervises: it forwards SIGTERM/SIGHUP/SIGUSR1 and restarts a worker that dies.
- SIGTERM: stop accepting, close idle sessions with 421 4.3.2, let transactions in flight
  finish for up to ``server.drain_timeout``, then 421 to what remains.
- SIGHUP: re-read config and rules; a broken file is refused with a logged error and the
  running configuration stays in force. Listen addresses and workers need a restart.
  The log file is reopened first, so SIGHUP also serves log rotation.
- SIGUSR1: reopen ``log.file`` only (logrotate's ``postrotate``). Every process reopens its
  own descriptor: the supervisor and each worker (the supervisor forwards the signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from proxy.app import build_generation, start_generation, stop_generation
from proxy.config.fields import parse_hostport
from proxy.config.schema import Config
from proxy.observability import logging as logs
from proxy.session.protocol import SmtpSession
from proxy.session.runtime import Runtime

log = structlog.get_logger("spamgate")


def bind_sockets(listen: list[str], *, reuseport: bool) -> list[socket.socket]:
    socks = []
    for item in listen:
        host, port = parse_hostport(item, "server.listen")
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(addr)
        s.listen(4096)
        s.setblocking(False)
        socks.append(s)
    return socks


def worker_count(config: Config) -> int:
    w = config.server.workers
    if w == "auto":
        return os.cpu_count() or 1
    return max(1, int(w))


class Server:
    """One worker: the asyncio servers, the runtime, drain and reload."""

    def __init__(self, config: Config, reload: Callable[[], Config] | None = None, slot: int = 0) -> None:
        self.config = config
        self.slot = slot  # worker number; worker 0 serves the admin listener
        self.admin: Any = None
        self._watch: asyncio.Task[Any] | None = None
        self._reload_source = reload
        self.runtime: Runtime | None = None
        self.servers: list[asyncio.Server] = []
        self.stopped = asyncio.Event()
        self._reloading = False

    async def start(self, socks: list[socket.socket]) -> None:
        if self.config.metrics.listen:
            from proxy.observability import metrics

            metrics.enable()  # before the generation: build_services registers its callbacks
        gen = build_generation(self.config)
        await start_generation(gen)
        self.runtime = rt = Runtime(gen)
        if self.config.metrics.listen:
            await self._start_admin(rt)
        loop = asyncio.get_running_loop()
        for s in socks:
            srv = await loop.create_server(lambda: SmtpSession(rt), sock=s, backlog=4096)
            self.servers.append(srv)
        log.info(
            "started",
            listen=self.config.server.listen,
            downstream=self.config.relay.downstream or f"maildir:{self.config.relay.maildir}",
            mode=self.config.server.mode,
            pid=os.getpid(),
            config=self.config.source,
        )

    async def _start_admin(self, rt: Runtime) -> None:
        from proxy.observability.admin import AdminServer, start_loop_watch

        self._watch = start_loop_watch(rt)
        if self.slot == 0:
            admin = AdminServer(rt)
            try:
                await admin.start(self.config.metrics.listen)
            except OSError as exc:
                # Mail flow over monitoring: serve SMTP without the admin listener.
                log.error("admin_listen_failed", listen=self.config.metrics.listen, error=str(exc))
                return
            self.admin = admin

    async def reload(self) -> bool:
        """Build the new generation completely, then swap it in; on error keep the old one."""
        if self._reload_source is None or self.runtime is None or self._reloading:
            return False
        self._reloading = True
        try:
            config = self._reload_source()
            gen = build_generation(config)
            await start_generation(gen)
        except Exception as exc:
            log.error("reload_refused", error=str(exc))
            return False
        finally:
            self._reloading = False
        old = self.runtime.gen
        self.runtime.gen = gen
        self.config = config
        log.info("reloaded", config=config.source, rules=list(gen.policy.rules.sources))
        task = asyncio.ensure_future(stop_generation(old))
        task.add_done_callback(lambda _t: None)
        return True

    def reopen_log(self) -> None:
        if logs.reopen():
            log.info("log_reopened", file=logs.file_path(), pid=os.getpid(), slot=self.slot)

    async def drain(self) -> None:
        rt = self.runtime
        for srv in self.servers:
            srv.close()
        if rt is None:
            return
        rt.draining = True
        timeout = rt.gen.config.server.drain_timeout
        log.info("draining", sessions=len(rt.sessions), timeout_s=timeout)
        for sess in list(rt.sessions):
            if sess.txn is None:
                sess.shutdown("shutdown")
        deadline = time.monotonic() + timeout
        while rt.sessions and time.monotonic() < deadline:  # noqa: ASYNC110 - sessions end on their own
            await asyncio.sleep(0.05)
        for sess in list(rt.sessions):
            sess.shutdown("shutdown_forced")
        await asyncio.sleep(0.05)
        await stop_generation(rt.gen)
        if self._watch is not None:
            self._watch.cancel()
        if self.admin is not None:
            await self.admin.close()
        log.info("stopped", pid=os.getpid())

    async def run(self, socks: list[socket.socket]) -> None:
        await self.start(socks)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        pending: set[asyncio.Task[Any]] = set()

        def on_hup() -> None:
            self.reopen_log()
            t = asyncio.ensure_future(self.reload())
            pending.add(t)
            t.add_done_callback(pending.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_log)
        await stop.wait()
        await self.drain()


def _run_worker(
    config: Config, reload: Callable[[], Config] | None, socks: list[socket.socket], slot: int = 0
) -> None:
    import uvloop

    async def main() -> None:
        await Server(config, reload, slot).run(socks)

    uvloop.run(main())


def _reopen_until_loop_runs() -> None:
    """Until a worker's event loop installs its own handlers, SIGHUP and SIGUSR1 (whose default
    action ends the process) only reopen the log file: a logrotate run during start-up neither
    kills the process nor leaves it writing to the rotated file."""

    def handler(_signum: int, _frame: Any) -> None:
        logs.reopen()

    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGUSR1, handler)


def serve(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run spamgate until SIGTERM. Returns the process exit code."""
    n = worker_count(config)
    _reopen_until_loop_runs()
    if n == 1:
        _run_worker(config, reload, bind_sockets(config.server.listen, reuseport=False))
        return 0
    return _supervise(config, reload, n)


def _supervise(config: Config, reload: Callable[[], Config] | None, n: int) -> int:
    # Bind once in the parent to fail early (address in use) with a clear message.
    probe = bind_sockets(config.server.listen, reuseport=True)
    multiproc = _metrics_multiproc_dir(config)
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            for s in probe:
                s.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _reopen_until_loop_runs()
            code = 0
            try:
                _run_worker(config, reload, bind_sockets(config.server.listen, reuseport=True), slot)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        elif logs.reopen():  # SIGHUP, SIGUSR1: the supervisor's own descriptor; workers theirs
            log.info("log_reopened", file=logs.file_path(), pid=os.getpid(), supervisor=True)
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGUSR1, forward)
    for slot in range(n):
        spawn(slot)
    for s in probe:
        s.close()
    log.info("supervisor_started", workers=n, pid=os.getpid())
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        slot = children.pop(pid)
        if multiproc:
            from proxy.observability import metrics

            metrics.mark_process_dead(pid)
        if not stopping:
            log.error("worker_died", pid=pid, status=status)
            time.sleep(0.5)
            spawn(slot)
    if multiproc:
        import shutil

        shutil.rmtree(multiproc, ignore_errors=True)
    sys.stdout.flush()
    return 0


def _metrics_multiproc_dir(config: Config) -> str:
    """With metrics on, a fresh directory for prometheus_client's multiprocess mode, set in the
    environment before the workers fork (they inherit it); '' with metrics off."""
    if not config.metrics.listen:
        return ""
    import tempfile

    from proxy.observability.metrics import MULTIPROC_ENV

    path = tempfile.mkdtemp(prefix="spamgate-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path
