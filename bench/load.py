"""Load generation: the clients that talk SMTP to a peer. They measure time, nothing else.

- ``smtp_source``: Postfix's smtp-source (W1-W3, W5, warm-up);
- ``sequential_transactions``: one session, one message at a time (latency);
- ``connect_flood``: connect, read the banner, QUIT, from a given /24 (W4);
- ``hold_idle``: open connections, banner + EHLO, then silence (W6).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from procs import sbin

T = TypeVar("T")


def smtp_source(port: int, flags: list[str], count: int) -> tuple[float, int]:
    """Run smtp-source: ``count`` messages with ``flags``; (wall seconds, exit code)."""
    cmd = [sbin("smtp-source"), "-M", "bench.test", "-m", str(count), *flags, f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    return time.monotonic() - t0, r.returncode


def _recv_reply(s: socket.socket, buf: bytearray) -> bytes:
    while True:
        end = buf.find(b"\r\n")
        while end >= 0:
            line = bytes(buf[: end + 2])
            del buf[: end + 2]
            if len(line) < 4 or line[3:4] != b"-":
                return line
            end = buf.find(b"\r\n")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk


def sequential_transactions(port: int, n: int) -> list[float]:
    """Seconds per message (MAIL .. final 250 after DATA) of a sequential client, one session."""
    body = b"Subject: latency\r\nFrom: a@bench.test\r\nTo: b@bench.test\r\n\r\n" + (b"x" * 78 + b"\r\n") * 52
    times = []
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _recv_reply(s, buf)
        s.sendall(b"EHLO bench.test\r\n")
        _recv_reply(s, buf)
        for _ in range(n):
            t0 = time.perf_counter()
            for cmd in (b"MAIL FROM:<a@bench.test>\r\n", b"RCPT TO:<b@bench.test>\r\n", b"DATA\r\n"):
                s.sendall(cmd)
                _recv_reply(s, buf)
            s.sendall(body + b".\r\n")
            reply = _recv_reply(s, buf)
            times.append(time.perf_counter() - t0)
            if not reply.startswith(b"250"):
                raise RuntimeError(f"latency client got {reply!r}")
        s.sendall(b"QUIT\r\n")
    return times


async def connect_flood(port: int, count: int, concurrency: int, net: str) -> tuple[float, int]:
    """``count`` connections from ``net``.1-50 (banner, QUIT); (wall seconds, banners that were 554)."""
    done = 0
    refused = 0

    async def worker(i: int) -> None:
        nonlocal done, refused
        src = f"{net}.{i % 50 + 1}"
        while done < count:
            done += 1
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
            line = await r.readline()
            if line.startswith(b"554"):
                refused += 1
            w.write(b"QUIT\r\n")
            with contextlib.suppress(ConnectionError):
                await r.readline()
            w.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return time.monotonic() - t0, refused


def _code(line: bytes) -> str:
    """The reply code of a refusing line ('closed': the server hung up)."""
    return line[:3].decode(errors="replace") or "closed"


async def hold_idle(
    port: int,
    n: int,
    hold: float,
    measure: Callable[[], T],
    source: Callable[[int], str] | None = None,
    tally: dict[str, int] | None = None,
) -> tuple[T, int]:
    """Open ``n`` connections (banner + EHLO), hold them ``hold`` s, call ``measure`` while they
    are open; (its result, connections greeted).

    Connection ``i`` is bound to ``source(i)`` (default: 127.0.2.1 for the first 5,000, then
    127.0.3.1, ...). With ``tally``, a connection that fails does not abort the run: each one is
    counted there by outcome (``greeted``, ``connect_error``, ``timeout``, ``closed``, ``error``,
    or the reply code that refused it, e.g. ``421``).
    """
    conns = []
    for i in range(n):
        src = source(i) if source else f"127.0.{i // 5000 + 2}.1"
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
        except OSError:
            if tally is None:
                raise
            tally["connect_error"] = tally.get("connect_error", 0) + 1
            continue
        conns.append((r, w))

    async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> str:
        async def talk() -> str:
            line = await r.readline()
            if not line.startswith(b"220"):
                return _code(line)
            w.write(b"EHLO idle.bench.test\r\n")
            while True:
                line = await r.readline()
                if not line or line[3:4] != b"-":
                    return "greeted" if line.startswith(b"250") else _code(line)

        try:
            return await asyncio.wait_for(talk(), 20)
        except TimeoutError:
            return "timeout"
        except (ConnectionError, OSError):
            return "error"

    greeted = 0
    for i in range(0, len(conns), 500):
        for outcome in await asyncio.gather(*(greet(r, w) for r, w in conns[i : i + 500])):
            greeted += outcome == "greeted"
            if tally is not None:
                tally[outcome] = tally.get(outcome, 0) + 1
    await asyncio.sleep(hold)
    after = measure()
    for _, w in conns:
        w.close()
    return after, greeted
