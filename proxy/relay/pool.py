"""A per-worker pool of idle downstream SMTP sessions, reused across client sessions.

Opening a downstream session (TCP connect, greeting, EHLO, maybe STARTTLS) costs the
downstream server 3-4x the CPU of relaying one message, and costs us a round trip or four.
Like Postfix's SMTP connection cache, a downstream session that ends a client session
healthy and outside a transaction goes back to the pool, and the next client session takes
it. XCLIENT is re-sent whenever the client identity differs (see ``SmtpDownstream._xclient``),
so the downstream always sees the real client.

Only a session that is provably idle at the protocol level (``SmtpDownstream.idle``: state
IDLE, no reply outstanding, still connected) is kept or handed out. A session given back in
the middle of a transaction whose replies are all known (state MAIL: the client left after
MAIL or RCPT) is reset in the background first (RSET, 250) and kept only if that worked;
anything else (a reply outstanding, DATA in progress, broken) is closed. See docs/RELAY.md.

Bounds: at most ``relay.pool_size`` idle sessions, each idle at most
``relay.pool_idle_timeout`` (keep it below the downstream's own idle timeout) and reused at
most ``relay.pool_max_uses`` times. A session the downstream closed while idle is detected
on acquire or on its first command and replaced transparently (nothing was sent on it yet).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from proxy.config.schema import RelayConfig
from proxy.relay.smtp import SmtpDownstream, State


class Pooled(Protocol):
    """What the pool needs of a downstream session (SMTP or LMTP)."""

    state: State
    busy: bool
    uses: int
    reused: bool

    @property
    def idle(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    async def rset(self) -> None: ...

    async def close(self) -> None: ...


_closing: set[asyncio.Task[Any]] = set()


def close_later(ds: Pooled) -> None:
    task = asyncio.ensure_future(ds.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class DownstreamPool:
    def __init__(self, cfg: RelayConfig, helo_name: str, factory: Callable[[], Pooled] | None = None) -> None:
        self.cfg = cfg
        self.helo_name = helo_name
        self.factory: Callable[[], Pooled] = factory or (lambda: SmtpDownstream(cfg, helo_name))
        self.idle: list[tuple[float, Pooled]] = []
        self.opened = 0
        self.reused = 0
        self.closed = False  # the generation is gone (reload, shutdown): nothing is kept

    def acquire(self) -> Any:
        now = time.monotonic()
        self._expire(now)
        while self.idle:
            _, ds = self.idle.pop()
            if ds.idle:
                ds.reused = True
                self.reused += 1
                return ds
            close_later(ds)
        self.opened += 1
        return self.factory()

    def _wanted(self, ds: Pooled) -> bool:
        cfg = self.cfg
        return not self.closed and ds.uses < cfg.pool_max_uses and len(self.idle) < cfg.pool_size

    def release(self, ds: Pooled) -> None:
        """Give a downstream session back at the end of a client session."""
        if self._wanted(ds):
            if ds.idle:
                self.idle.append((time.monotonic(), ds))
                return
            if ds.state is State.MAIL and not ds.busy and ds.alive:
                task = asyncio.ensure_future(self._reset_then_keep(ds))
                _closing.add(task)
                task.add_done_callback(_closing.discard)
                return
        close_later(ds)

    async def _reset_then_keep(self, ds: Pooled) -> None:
        """RSET a session left in a transaction; keep it only when the downstream said 250."""
        await ds.rset()
        if ds.idle and self._wanted(ds):
            self.idle.append((time.monotonic(), ds))
        else:
            await ds.close()

    def _expire(self, now: float) -> None:
        limit = now - self.cfg.pool_idle_timeout
        if self.idle and self.idle[0][0] < limit:
            keep = []
            for t, ds in self.idle:
                if t < limit:
                    close_later(ds)
                else:
                    keep.append((t, ds))
            self.idle = keep

    async def close(self) -> None:
        """Close the idle sessions; sessions still in use are closed when given back."""
        self.closed = True
        idle, self.idle = self.idle, []
        await asyncio.gather(*(ds.close() for _, ds in idle), return_exceptions=True)
