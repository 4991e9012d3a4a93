#!/usr/bin/env python3
"""A fast SMTP load generator that binds many client source addresses (smtp-source cannot).

Each session connects from the next address of ``--sources`` (127.x.y.z, round-robin), reads
the banner, sends EHLO, then sends its messages: MAIL, RCPT and DATA in one write when the
server offers PIPELINING (RFC 2920; ``--no-pipelining`` sends them one at a time as
smtp-source does), the message, and QUIT after the last. ``--procs`` splits the sessions over
that many processes (asyncio on uvloop each); the parent adds their counts up.

A message is ``--size`` bytes of text like smtp-source's ``-l`` (default: a 4-line body), or
one of a pickled pool (``--pool FILE``, list of ``(source, helo, mail_from, rcpt, bytes)``:
W5-real's signed mail; a session then connects from, and greets with, its first message's
client address and name). Every message carries a unique ``X-Bench-Id``; with ``--acked FILE``
each process writes a line per message the server answered 250 to DATA for: its id and the
address the connection was bound to (the soak and tests/test_bench_tools.py compare them with
what the sink got, bench/faultsink.py's ``reconcile``).
``--message-id`` also puts a ``Message-ID`` made of that id on every
message (bench/content_load.py's corpus has none: a unique one per send). ``--times FILE``
writes, per message, its index, the seconds from MAIL to the reply after DATA and that reply's
first line (FILE.<part>, tab-separated).

``--rate R`` paces the start of messages at R per second overall (the soak); without it every
session sends as fast as the server answers. A session that takes longer than
``--session-timeout`` is counted as hung and abandoned.

    python bench/loadgen.py --port 20602 --count 8000 --sessions 50 --size 4096 --sources 1000

Prints one JSON object: count, wall_s, rate, and the outcome of every message, one each
(ok + tempfail + reject + errors = count): ok (250 after DATA), tempfail (the first 4xx of its
transaction), reject (5xx), errors (connection lost or session hung while it was in flight, or
an unexpected reply); then hung (sessions that passed ``--session-timeout``) and late_errors
(sessions lost after their last message had its answer, e.g. at QUIT: no message affected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

HELO = "bench.test"
FROM, RCPT = "foo@bench.test", "bar@bench.test"


def source(k: int) -> str:
    """Loopback address ``k``, in a /24 of 127.10.0.0-127.109.255.255 (none in the W4 blocklist
    127.0.99.0/24; address k is alone in its /24 up to 25,000)."""
    return f"127.{10 + k % 100}.{(k // 100) % 250}.{1 + k % 250}"


def sources(n: int) -> list[str]:
    """``n`` distinct loopback addresses (``source(0)`` .. ``source(n - 1)``)."""
    return [source(k) for k in range(n)]


def text_message(size: int, ident: str) -> bytes:
    """A message like smtp-source's: a few headers and ``size`` bytes of 78-column lines."""
    head = f"From: <{FROM}>\r\nTo: <{RCPT}>\r\nSubject: bench\r\nX-Bench-Id: {ident}\r\n\r\n".encode()
    if size <= 0:
        return head + b"La de da de da 1.\r\nLa de da de da 2.\r\nLa de da de da 3.\r\nLa de da de da 4.\r\n"
    line = b"x" * 78 + b"\r\n"
    return head + line * (size // 80) + b"x" * (size % 80 or 1) + b"\r\n"


@dataclass
class Counts:
    ok: int = 0
    tempfail: int = 0
    reject: int = 0
    errors: int = 0
    hung: int = 0
    late_errors: int = 0


class Gen:
    def __init__(self, a: argparse.Namespace, part: int) -> None:
        self.a = a
        self.part = part
        self.src = sources(a.sources) if a.sources else []
        self.pool: list[tuple[str, str, str, str, bytes]] = (
            pickle.loads(Path(a.pool).read_bytes()) if a.pool else []
        )
        self.counts = Counts()
        self.next_msg = 0
        self.total = a.count
        # line-buffered: the soak counts the lines while the load runs
        self.acked: IO[str] | None = open(f"{a.acked}.{part}", "w", buffering=1) if a.acked else None  # noqa: SIM115
        self.times: IO[str] | None = open(f"{a.times}.{part}", "w") if a.times else None  # noqa: SIM115
        self.t0 = 0.0

    def take(self) -> int | None:
        """The index of the next message to send (None: all are taken)."""
        if self.next_msg >= self.total:
            return None
        self.next_msg += 1
        return self.next_msg - 1

    def message(self, i: int) -> tuple[str, str, bytes, str]:
        ident = f"{self.a.tag}.{self.part}.{i}"
        if self.pool:
            _, _, mail_from, rcpt, data = self.pool[i % len(self.pool)]
            head = f"X-Bench-Id: {ident}\r\n"
            if self.a.message_id:
                head += f"Message-ID: <{ident}@loadgen.bench.test>\r\n"
            return mail_from, rcpt, head.encode() + data, ident
        return FROM, RCPT, text_message(self.a.size, ident), ident

    async def pace(self, i: int) -> None:
        if self.a.rate:
            delay = self.t0 + i / (self.a.rate / self.a.procs) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def session(self, k: int, cur: list[int | None]) -> None:
        """One connection; ``cur[0]``: the message in flight (None once it has its answer)."""
        first = cur[0]
        assert first is not None
        src = self.src[k % len(self.src)] if self.src else None
        helo = HELO
        if self.pool:
            src, helo = self.pool[first % len(self.pool)][:2]
        r, w = await asyncio.open_connection("127.0.0.1", self.a.port, local_addr=(src, 0) if src else None)
        bound = str(w.get_extra_info("sockname")[0])  # the address the kernel really used
        try:
            banner = await reply(r)
            if not banner.startswith(b"2"):
                self.tally(banner)
                cur[0] = None
                return
            w.write(f"EHLO {helo}\r\n".encode())
            ehlo = await reply(r, lines=True)
            pipelining = self.a.pipelining and b"PIPELINING" in ehlo
            i: int | None = first
            sent = 0
            while i is not None:
                await self.transaction(r, w, i, pipelining, bound, cur)
                sent += 1
                i = cur[0] = self.take() if sent < self.a.per_session else None
                if i is not None:
                    await self.pace(i)
            w.write(b"QUIT\r\n")
            await reply(r)
        finally:
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()

    async def transaction(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        i: int,
        pipe: bool,
        bound: str,
        cur: list[int | None],
    ) -> None:
        mail_from, rcpt, data, ident = self.message(i)
        t0 = time.perf_counter()
        cmds = [f"MAIL FROM:<{mail_from}>\r\n".encode(), f"RCPT TO:<{rcpt}>\r\n".encode(), b"DATA\r\n"]
        if pipe:
            w.write(b"".join(cmds))
            codes = [await reply(r) for _ in cmds]
        else:
            codes = []
            for c in cmds:
                w.write(c)
                codes.append(await reply(r))
                if not codes[-1].startswith(b"2"):
                    break
        if not codes[-1].startswith(b"354"):
            self.tally(bad := next((c for c in codes if not c.startswith((b"2", b"3"))), codes[-1]))
            self.time(i, t0, bad)
            cur[0] = None
            w.write(b"RSET\r\n")
            await reply(r)
            return
        w.write(data + b".\r\n")
        final = await reply(r)
        self.time(i, t0, final)
        self.tally(final)
        cur[0] = None
        if final.startswith(b"250") and self.acked is not None:
            self.acked.write(f"{ident} {bound}\n")

    def time(self, i: int, t0: float, code: bytes) -> None:
        if self.times is not None:
            line = code.decode("utf-8", "replace").strip()
            self.times.write(f"{i}\t{time.perf_counter() - t0:.6f}\t{line}\n")

    def tally(self, code: bytes) -> None:
        c = self.counts
        if code.startswith(b"2"):
            c.ok += 1
        elif code.startswith(b"4"):
            c.tempfail += 1
        elif code.startswith(b"5"):
            c.reject += 1
        else:
            c.errors += 1

    async def worker(self, k: int) -> None:
        while (i := self.take()) is not None:
            await self.pace(i)
            cur: list[int | None] = [i]
            try:
                await asyncio.wait_for(self.session(k, cur), self.a.session_timeout)
            except TimeoutError:
                self.counts.hung += 1
                self.counts.errors += cur[0] is not None
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                if cur[0] is not None:
                    self.counts.errors += 1
                else:
                    self.counts.late_errors += 1
            k += self.a.sessions * self.a.procs

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        await asyncio.gather(*(self.worker(self.part + p * self.a.procs) for p in range(self.a.sessions)))
        wall = time.monotonic() - self.t0
        if self.acked is not None:
            self.acked.close()
        if self.times is not None:
            self.times.close()
        return {"count": self.total, "wall_s": wall, **asdict(self.counts)}


def read_acked(paths: list[Path]) -> dict[str, str]:
    """The ``--acked`` files (one per process): message id -> the address it was sent from."""
    out: dict[str, str] = {}
    for p in paths:
        for line in p.read_text().splitlines() if p.exists() else []:
            ident, _, bound = line.partition(" ")
            out[ident] = bound
    return out


async def reply(r: asyncio.StreamReader, lines: bool = False) -> bytes:
    """The last line of one (multi-line) reply, or all its lines with ``lines``."""
    out = b""
    while True:
        line = await r.readuntil(b"\r\n")
        out = out + line if lines else line
        if line[3:4] != b"-":
            return out


def run_part(a: argparse.Namespace, part: int) -> dict[str, Any]:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    gen = Gen(a, part)
    return asyncio.run(gen.run())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000, help="messages in all")
    ap.add_argument("--sessions", type=int, default=50, help="concurrent sessions in all")
    ap.add_argument("--per-session", type=int, default=1, help="messages per session (0: unlimited)")
    ap.add_argument("--size", type=int, default=0, help="body bytes (smtp-source -l); 0: 4 lines")
    ap.add_argument("--sources", type=int, default=0, help="client addresses (0: 127.0.0.1 only)")
    ap.add_argument("--pool", help="pickled [(mail_from, rcpt, message)] to send round-robin")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0, help="messages/s in all (0: as fast as possible)")
    ap.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    ap.add_argument("--session-timeout", type=float, default=60.0)
    ap.add_argument("--acked", help="write acknowledged ids to FILE.<part>")
    ap.add_argument("--times", help="write 'index seconds reply' per message to FILE.<part>")
    ap.add_argument("--message-id", action="store_true", help="a Message-ID from the X-Bench-Id (--pool)")
    ap.add_argument("--tag", default=f"r{os.getpid()}", help="prefix of the X-Bench-Id of this run")
    ap.add_argument("--part", type=int, default=-1, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.per_session == 0:
        a.per_session = a.count
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load (in ``--procs`` processes) and return the summed result."""
    a = parse(argv)
    if a.part >= 0:  # one process of several: its share of the count and the sessions
        a.count = a.count // a.procs + (1 if a.part < a.count % a.procs else 0)
        a.sessions = max(1, a.sessions // a.procs)
        return run_part(a, a.part)
    if a.procs == 1:
        res = run_part(a, 0)
    else:
        args = sys.argv[1:] if argv is None else argv
        ps = [
            subprocess.Popen([sys.executable, __file__, *args, "--part", str(p)], stdout=subprocess.PIPE)
            for p in range(a.procs)
        ]
        parts = [json.loads(p.communicate()[0]) for p in ps]
        res = {k: sum(p[k] for p in parts) for k in parts[0] if k != "wall_s"}
        res["wall_s"] = max(p["wall_s"] for p in parts)
    res["rate"] = round(res["ok"] / res["wall_s"], 1) if res["wall_s"] else 0.0
    res["wall_s"] = round(res["wall_s"], 3)
    return res


def loadgen(port: int, count: int, *flags: str) -> dict[str, Any]:
    """Run the generator as a child process (its own CPU, like smtp-source); its JSON result."""
    cmd = [sys.executable, __file__, "--port", str(port), "--count", str(count), *flags]
    out = subprocess.run(cmd, capture_output=True, timeout=3600, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


if __name__ == "__main__":
    print(json.dumps(main()))
