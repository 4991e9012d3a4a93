"""What every scanner client shares: the address, the connection limit, the timeout, health.

``Scanner.exchange(op)`` takes a slot of the connection limit, opens a connection, runs
``op(reader, writer)`` and closes the connection, all under one deadline (``timeout``). Every
failure becomes a :class:`ScanError` with a ``kind``; the outcome feeds the scanner's
:class:`Health` and its metrics (:mod:`proxy.observability.scanner_metrics`).

Error kinds: ``unavailable`` (connect refused, reset, closed early), ``timeout`` (no answer
within the deadline), ``busy`` (every connection slot stayed taken until the deadline),
``protocol`` (an answer the client cannot read), ``refused`` (the scanner answered with an
error), ``too_big`` (the scanner's own size limit). Only the first four make a scanner
unhealthy: ``refused`` and ``too_big`` are answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from proxy.config.fields import parse_hostport
from proxy.observability import scanner_metrics

log = structlog.get_logger("spamgate.scan")

T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
UNHEALTHY_KINDS = frozenset({"unavailable", "timeout", "protocol"})


class ScanError(Exception):
    """A scan that gave no verdict; ``kind`` is one of the kinds in the module docstring."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``host:port`` (IPv6 as ``[addr]:port``), or a Unix socket: ``unix:/path`` or ``/path``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str, default_port: int, where: str = "address") -> Endpoint:
        if text.startswith("unix:"):
            return cls(path=text[5:])
        if text.startswith("/"):
            return cls(path=text)
        host, port = parse_hostport(text, where, default_port=default_port)
        return cls(host=host, port=port)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def open(self, limit: int = 2**16) -> Streams:
        if self.path:
            return await asyncio.open_unix_connection(self.path, limit=limit)
        return await asyncio.open_connection(self.host, self.port, limit=limit)


class Health:
    """Up or down, from the last exchange or probe; transitions are logged once."""

    __slots__ = ("failures", "last_error", "name", "up")

    def __init__(self, name: str) -> None:
        self.name = name
        self.up: bool | None = None  # None: not used yet
        self.failures = 0  # consecutive
        self.last_error = ""

    def ok(self) -> None:
        if self.up is False:
            log.info("scanner_up", scanner=self.name, after_failures=self.failures)
        self.up, self.failures, self.last_error = True, 0, ""
        scanner_metrics.health(self.name, True)

    def failed(self, error: ScanError) -> None:
        self.failures += 1
        self.last_error = str(error)
        if error.kind not in UNHEALTHY_KINDS:
            return
        if self.up is not False:
            log.warning("scanner_down", scanner=self.name, error=str(error))
        self.up = False
        scanner_metrics.health(self.name, False)


class Scanner:
    """Base of the three clients: one endpoint, a connection limit, a deadline, health."""

    default_port = 0
    name = "scanner"

    def __init__(self, address: str, *, timeout: float, max_connections: int) -> None:
        self.endpoint = Endpoint.parse(address, self.default_port)
        self.timeout = timeout
        self.slots = asyncio.Semaphore(max_connections)
        self.health = Health(self.name)

    async def exchange(self, op: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]]) -> T:
        """Run ``op`` on a fresh connection under the slot limit and the deadline."""
        t0 = time.monotonic()
        try:
            result = await self._exchange(op)
        except ScanError as exc:
            self.health.failed(exc)
            scanner_metrics.scan(self.name, time.monotonic() - t0, error=exc.kind)
            raise
        self.health.ok()
        scanner_metrics.scan(self.name, time.monotonic() - t0)
        return result

    async def _exchange(self, op: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]]) -> T:
        stage = "busy"
        try:
            async with asyncio.timeout(self.timeout):
                async with self.slots:
                    stage = "connect"
                    try:
                        reader, writer = await self.endpoint.open()
                    except OSError as exc:
                        raise ScanError("unavailable", f"{self.endpoint}: {exc.strerror or exc}") from None
                    stage = "answer"
                    try:
                        return await op(reader, writer)
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        raise ScanError(
                            "unavailable", f"{self.endpoint}: connection lost ({exc!r})"
                        ) from None
                    finally:
                        writer.close()
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(writer.wait_closed(), 0.5)
        except TimeoutError:
            if stage == "busy":
                raise ScanError("busy", f"no free connection within {self.timeout:g}s") from None
            raise ScanError("timeout", f"{self.endpoint}: no {stage} within {self.timeout:g}s") from None

    async def probe(self) -> bool:
        """The readiness probe: the scanner's own ping, outside the connection limit."""
        try:
            reader, writer = await asyncio.wait_for(self.endpoint.open(), self.timeout)
        except (OSError, TimeoutError) as exc:
            self.health.failed(ScanError("unavailable", f"{self.endpoint}: {exc!r}"))
            return False
        try:
            ok = await asyncio.wait_for(self.ping(reader, writer), self.timeout)
        except ScanError as exc:
            self.health.failed(exc)
            return False
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.health.failed(ScanError("unavailable", f"{self.endpoint}: ping failed ({exc!r})"))
            return False
        finally:
            writer.close()
        if ok:
            self.health.ok()
        else:
            self.health.failed(ScanError("protocol", f"{self.endpoint}: unexpected ping answer"))
        return ok

    async def ping(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        raise NotImplementedError


async def read_line(reader: asyncio.StreamReader, sep: bytes = b"\n", limit: int = 8192) -> bytes:
    """One line (or NUL-terminated answer) of at most ``limit`` bytes; EOF first is an error."""
    try:
        line = await reader.readuntil(sep)
    except asyncio.LimitOverrunError:
        raise ScanError("protocol", "answer line too long") from None
    if len(line) > limit:
        raise ScanError("protocol", "answer line too long")
    return line
