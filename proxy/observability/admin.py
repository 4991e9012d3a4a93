"""The admin HTTP listener (``[metrics] listen``): ``/metrics``, ``/healthz``, ``/readyz``, ``/console``.

A minimal HTTP/1.0 server on asyncio (GET, and POST for the console; one request per connection, ``Connection:
close``); it never shares a port with SMTP and binds 127.0.0.1 by default.

- ``/metrics``: Prometheus text format (prometheus_client ``generate_latest``); with several
  workers, the aggregate of all of them (multiprocess mode, see :mod:`.metrics`).
- ``/console/...``: the operator console (:mod:`proxy.console`), behind its login.
- ``/healthz``: 200 while the process runs its event loop.
- ``/readyz``: 200 when the downstream answers a TCP connect with a 220 greeting (result cached
  ``readyz_cache`` seconds; a Maildir downstream is always ready) and every
  ``Services.readiness[name]()`` returns True within ``readyz_timeout``; else 503. The body lists
  each dependency as ``name ok`` or ``name failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import structlog

from proxy.config.fields import parse_hostport
from proxy.console.app import Console
from proxy.console.http import HttpError, Response, read_request
from proxy.observability import metrics
from proxy.session.runtime import Runtime

log = structlog.get_logger("spamgate.admin")


async def probe_downstream(hostport: str, limit: float) -> bool:
    """True when ``hostport`` accepts a TCP connection and greets with 220 within ``limit`` s."""
    timeout = limit
    host, port = parse_hostport(hostport, "relay.downstream")
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
        ok = line.startswith(b"220")
        with contextlib.suppress(Exception):
            writer.write(b"QUIT\r\n")
            await asyncio.wait_for(writer.drain(), timeout)
        return ok
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


class AdminServer:
    """Serves the admin endpoints for one worker's :class:`Runtime` (its current generation)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.server: asyncio.Server | None = None
        self._ds_cache: tuple[str, float, bool] = ("", 0.0, False)
        self.console = Console(runtime, self.readiness)

    async def start(self, listen: str) -> None:
        host, port = parse_hostport(listen, "metrics.listen")
        self.server = await asyncio.start_server(self._handle, host or None, port)
        log.info("admin_listening", listen=listen)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)

    # -- endpoints -------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, list[str]]:
        cfg = self.rt.gen.config
        timeout = cfg.metrics.readyz_timeout
        checks: dict[str, Callable[[], Awaitable[bool]]] = {}
        if cfg.relay.downstream:
            checks["downstream"] = self._downstream_ok
        checks.update(self.rt.gen.services.readiness)
        names = list(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[n](), timeout) for n in names), return_exceptions=True
        )
        report = []
        ready = True
        for name, res in zip(names, results, strict=True):
            ok = res is True
            ready = ready and ok
            report.append(f"{name} {'ok' if ok else 'failed'}")
        return ready, report

    async def _downstream_ok(self) -> bool:
        cfg = self.rt.gen.config
        target = cfg.relay.downstream
        cached_target, when, ok = self._ds_cache
        now = time.monotonic()
        if cached_target == target and now - when < cfg.metrics.readyz_cache:
            return ok
        ok = await probe_downstream(target, cfg.metrics.readyz_timeout)
        self._ds_cache = (target, time.monotonic(), ok)
        return ok

    async def _metrics_body(self) -> bytes:
        from prometheus_client import generate_latest

        if not metrics.enabled():
            return b""
        reg = metrics.registry()
        # Multiprocess collection reads files: keep it off the event loop.
        body: bytes = await asyncio.get_running_loop().run_in_executor(None, generate_latest, reg)
        return body

    async def _route(
        self, path: str, query: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            ready, report = await self.readiness()
            body = ("\n".join(report) + "\n").encode() if report else b"ok\n"
            return (200 if ready else 503), "text/plain; charset=utf-8", body
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return 200, CONTENT_TYPE_LATEST, await self._metrics_body()
        extra = self.rt.gen.services.http_routes.get(path)  # e.g. /feed (proxy.sharing.service)
        if extra is not None:
            return await extra(query, headers or {})
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                req = await read_request(reader)
            except HttpError as exc:
                writer.write(Response(exc.status, f"{exc}\n".encode(), "text/plain").encode())
                await writer.drain()
                return
            peer = writer.get_extra_info("peername")
            req.remote = str(peer[0]) if peer else ""
            if req.path == "/console" or req.path.startswith("/console/"):
                resp = await self.console.handle(req)
            elif req.method not in ("GET", "HEAD"):
                resp = Response(405, b"method not allowed\n", "text/plain; charset=utf-8")
            else:
                query = urlencode(req.query)
                status, ctype, body = await self._route(req.path, query, req.headers)
                resp = Response(status, body, ctype)
            writer.write(resp.encode(head_only=req.method == "HEAD"))
            await writer.drain()
        except (OSError, TimeoutError, UnicodeError):
            pass
        except Exception:
            log.exception("admin_request_failed")
        finally:
            writer.close()


def start_loop_watch(runtime: Runtime) -> asyncio.Task[Any]:
    return asyncio.ensure_future(metrics.watch_loop(lambda: len(runtime.sessions)))
