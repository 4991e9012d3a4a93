"""A per-worker pool of idle downstream SMTP sessions, reused across client sessions.

Opening a downstream session (TCP connect, greeting, EHLO, maybe STARTTLS) costs the
downstream server 3-4x the CPU of relaying one message, and costs us a round trip or four.
Like Postfix's SMTP connection cache, a downstream session that ends a client session
healthy and outside a transaction goes back to the pool, and the next client session takes
it. XCLIENT is re-sent whenever the client identity differs (see ``SmtpDownstream._xclient``),
so the downstream always sees the real client.

Bounds: at most ``relay.pool_size`` idle sessions, each idle at most
``relay.pool_idle_timeout`` (keep it below the downstream's own idle timeout) and reused at
most ``relay.pool_max_uses`` times. A session the downstream closed while idle is detected
on acquire or on its first command and replaced transparently (nothing was sent on it yet).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proxy.config.schema import RelayConfig
from proxy.relay.smtp import SmtpDownstream

_closing: set[asyncio.Task[Any]] = set()


def close_later(ds: SmtpDownstream) -> None:
    task = asyncio.ensure_future(ds.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class DownstreamPool:
    def __init__(self, cfg: RelayConfig, helo_name: str) -> None:
        self.cfg = cfg
        self.helo_name = helo_name
        self.idle: list[tuple[float, SmtpDownstream]] = []
        self.opened = 0
        self.reused = 0
        self.closed = False  # the generation is gone (reload, shutdown): nothing is kept

    def acquire(self) -> SmtpDownstream:
        now = time.monotonic()
        self._expire(now)
        while self.idle:
            _, ds = self.idle.pop()
            if ds.alive and not ds.in_txn:
                ds.reused = True
                self.reused += 1
                return ds
            close_later(ds)
        self.opened += 1
        return SmtpDownstream(self.cfg, self.helo_name)

    def release(self, ds: SmtpDownstream) -> None:
        """Give a downstream session back at the end of a client session."""
        cfg = self.cfg
        if (
            not self.closed
            and ds.alive
            and not ds.in_txn
            and ds.uses < cfg.pool_max_uses
            and len(self.idle) < cfg.pool_size
        ):
            self.idle.append((time.monotonic(), ds))
            return
        close_later(ds)

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
