#!/usr/bin/env python3
"""A counting SMTP sink with random faults, for the soak (bench/soak.py); runs as a process.

It speaks ESMTP with PIPELINING and keeps nothing but the ``X-Bench-Id`` of each message it
answered 250 to the end of DATA for (appended to ``--delivered FILE``): the soak checks that
every message a client saw 250 for is there. Faults, each with its probability per command:

  --tempfail-rcpt P   451 4.3.0 to RCPT
  --tempfail-dot  P   451 4.3.0 after the message (nothing delivered)
  --drop-dot      P   close the connection after the message, with no reply (nothing delivered)
  --slow          P   wait --slow-s seconds (uniform 0..S) before a reply

    python bench/faultsink.py --port 20600 --delivered /tmp/delivered.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
from typing import IO

EHLO = b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
ID = b"\r\nX-Bench-Id: "


class Sink:
    def __init__(self, a: argparse.Namespace, out: IO[bytes]) -> None:
        self.a = a
        self.out = out
        self.rng = random.Random(a.seed)
        self.delivered = 0

    def roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    async def reply(self, w: asyncio.StreamWriter, line: bytes) -> None:
        if self.roll(self.a.slow):
            await w.drain()
            await asyncio.sleep(self.rng.uniform(0, self.a.slow_s))
        w.write(line)

    async def session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            w.write(b"220 sink.bench.test ESMTP\r\n")
            while line := await r.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    w.write(EHLO if verb == b"EHLO" else b"250 sink.bench.test\r\n")
                elif verb == b"RCPT" and self.roll(self.a.tempfail_rcpt):
                    await self.reply(w, b"451 4.3.0 fault: rcpt\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"XCLI"):
                    await self.reply(w, b"250 2.0.0 Ok\r\n")
                elif verb == b"DATA":
                    await self.reply(w, b"354 go ahead\r\n")
                    await w.drain()
                    data = await r.readuntil(b"\r\n.\r\n")
                    if self.roll(self.a.drop_dot):
                        return
                    if self.roll(self.a.tempfail_dot):
                        await self.reply(w, b"451 4.3.0 fault: dot\r\n")
                        continue
                    await self.reply(w, b"250 2.0.0 Ok queued\r\n")
                    await w.drain()  # written before it counts as delivered
                    i = data.find(ID)
                    ident = data[i + len(ID) : data.index(b"\r\n", i + len(ID))] if i >= 0 else b"?"
                    self.out.write(ident + b"\n")
                    self.delivered += 1
                elif verb == b"QUIT":
                    w.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    w.write(b"502 5.5.2 unknown\r\n")
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            w.close()

    async def serve(self) -> None:
        srv = await asyncio.start_server(self.session, "127.0.0.1", self.a.port, backlog=4096, limit=2**24)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with srv:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                self.out.flush()
        self.out.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delivered", required=True)
    ap.add_argument("--tempfail-rcpt", type=float, default=0.0)
    ap.add_argument("--tempfail-dot", type=float, default=0.0)
    ap.add_argument("--drop-dot", type=float, default=0.0)
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--slow-s", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with open(a.delivered, "ab") as out:
        asyncio.run(Sink(a, out).serve())


if __name__ == "__main__":
    main()
