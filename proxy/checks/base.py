"""What a check is: a small module that looks at one SMTP stage and emits named symbols.

A check never decides and never replies. It declares its symbols (:class:`SymbolDef`: name,
default score, description, how a sender fixes it) and implements one coroutine,
``check(ctx) -> list[Symbol]``, over a read-only :class:`CheckContext`. Scores, thresholds and
actions come from ``rules/`` (:mod:`proxy.policy`). Evidence goes into ``Symbol.evidence`` so
the log line says *why* (``RBL_ZEN(3){zen.spamhaus.org:127.0.0.4}``).

Contract:
- ``check`` must not block the event loop: DNS and store I/O are awaited through the injected
  services; CPU-heavy work goes to a bounded pool (the auth checks have one per family, see
  :mod:`proxy.auth.pools`; ``services.run_blocking`` is the general one).
- A failure of the check's own dependencies (DNS timeout, store down) is a *symbol* (weight 0 by
  default, e.g. ``SPF_TEMPERROR``), never "not listed" and never an exception. An exception that
  escapes anyway becomes ``CHECK_ERROR{name}`` and the stage goes on.
- ``check`` may read symbols of earlier stages through ``ctx.has_symbol`` (e.g. skip DNS lists
  for an allowlisted client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from proxy.config.schema import Config
from proxy.model import Connection, Stage, Symbol, SymbolDef, Transaction

__all__ = [
    "Check",
    "CheckContext",
    "GreetingHook",
    "Services",
    "Stage",
    "Symbol",
    "SymbolDef",
    "symbol_index",
]

T = TypeVar("T")


@dataclass(slots=True)
class Services:
    """What checks may use, injected once at start. Filled by later subsystems."""

    config: Config
    resolver: Any = None  # proxy.dns.resolver.Resolver
    store: Any = None  # proxy.state.Store
    pass_cache: Any = None  # temporary allowlist of clients that passed connect tests
    run_blocking: Callable[..., Awaitable[Any]] | None = None
    # Called with (conn, txn, outcome) after each transaction's log line (reputation, metrics).
    on_transaction: list[Callable[..., None]] = field(default_factory=list)
    # Called with (conn, txn, address, reply) after the downstream answered a RCPT (recipient cache).
    on_rcpt_reply: list[Callable[..., None]] = field(default_factory=list)
    # Called with (conn,) when a connection closes (fleet concurrency slots, metrics).
    on_close: list[Callable[..., None]] = field(default_factory=list)
    # Extra admin listener paths: path -> coroutine (query, lower-cased headers) -> (status,
    # content type, body). The feed export registers /feed (proxy.sharing.service).
    http_routes: dict[str, Callable[..., Awaitable[tuple[int, str, bytes]]]] = field(default_factory=dict)
    # Called by /readyz: name -> coroutine returning True when that dependency is reachable.
    readiness: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CheckContext:
    """The read-only view a check gets of the session at its stage."""

    stage: Stage
    conn: Connection
    txn: Transaction | None = None
    rcpt: str = ""  # the recipient under test at the RCPT stage
    message: bytes = b""  # the message at the DATA stage (CRLF line ends, unstuffed)
    fired: frozenset[str] = frozenset()  # names of symbols fired so far in this transaction
    score: float = 0.0  # total score of the symbols fired so far (e.g. greylist only above a score)

    def has_symbol(self, name: str) -> bool:
        return name in self.fired


class GreetingHook(Protocol):
    """What the session offers a connect-stage check before the greeting (pregreet).

    The only way a check touches the client's connection: it never sees the session's reader,
    writer or buffers.
    """

    async def send_teaser(self) -> None:
        """Send the first line of a multi-line greeting (``220-host banner``). The session
        completes the greeting, with the same code, once the connect stage is decided."""
        ...

    def watch_early_input(self, delay: float) -> asyncio.Future[tuple[float, bytes] | None]:
        """Watch the connection for ``delay`` seconds. The result is None when the client was
        silent, else (seconds until it spoke, what it sent; b"" when it hung up). Whatever
        it sent is kept and read as its first command."""
        ...


class Check:
    """Base class of all checks. Subclasses set the class attributes and implement ``check``.

    ``Options`` is the dataclass of the check's ``[checks.<name>]`` section; it must have the
    fields ``enabled`` and ``mode`` (see :class:`BaseOptions`).
    """

    name: ClassVar[str]
    stage: ClassVar[Stage]
    symbols: ClassVar[tuple[SymbolDef, ...]]
    Options: ClassVar[type[Any]]
    description: ClassVar[str] = ""
    io: ClassVar[bool] = False  # True: awaits DNS/store I/O, runs as a task under the stage budget

    def __init__(self, options: Any, services: Services) -> None:
        self.options = options
        self.services = services

    async def check(self, ctx: CheckContext) -> list[Symbol]:  # pragma: no cover - interface
        raise NotImplementedError

    async def before_greeting(self, conn: Connection, hook: GreetingHook) -> None:
        """Connect-stage checks only: called before the connect checks run, while the greeting
        is not yet sent (pregreet's teaser). The default does nothing."""

    async def start(self) -> None:
        """Called once when the server starts (load files, start probes)."""

    async def stop(self) -> None:
        """Called once at shutdown."""


def symbol_index(defs: tuple[SymbolDef, ...]) -> dict[str, SymbolDef]:
    return {d.name: d for d in defs}
