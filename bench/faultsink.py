#!/usr/bin/env python3
"""A counting SMTP sink with random faults, for the soak (bench/soak.py); runs as a process.

It speaks ESMTP with PIPELINING (DATA without an accepted RCPT gets 554, RFC 2920), as strictly
as Postfix: a nested MAIL, or RCPT or DATA outside a transaction, gets 503 and is counted as a
``sequence_errors`` (the soak fails on any: a downstream session reused out of step). It keeps
nothing but a line per message it stored, appended to ``--delivered FILE``: the message's
``X-Bench-Id``, the client address it came from, and ``noreply`` when the connection was then
dropped without a reply. A message is stored *before* its 250 is sent, as an MTA commits it
before answering: every message a client saw 250 for must be there (the soak and
tests/test_bench_tools.py check it with :func:`reconcile`). Faults, each with its probability
per command:

  --tempfail-rcpt   P   451 4.3.0 to RCPT
  --tempfail-dot    P   451 4.3.0 after the message (nothing stored)
  --drop-dot        P   close the connection after the message, with no reply (nothing stored)
  --drop-stored     P   store the message, then close the connection with no reply (the
                        client does not know it was delivered: it would send it again)
  --slow            P   wait --slow-s seconds (uniform 0..S) before a reply

On SIGTERM/SIGINT it prints one JSON object: how often each fault fired, messages stored,
sessions, sequence errors, and peers (how many distinct client addresses connected);
:func:`read_stats` reads it back from the sink's log.

    python bench/faultsink.py --port 20600 --delivered /tmp/delivered.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SEQUENCE_ERRORS = {
    b"MAIL": b"503 5.5.1 Error: nested MAIL command\r\n",
    b"RCPT": b"503 5.5.1 Error: need MAIL command\r\n",
    b"DATA": b"503 5.5.1 Error: need RCPT command\r\n",
}
EHLO = b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
ID = b"\r\nX-Bench-Id: "


class Sink:
    def __init__(self, a: argparse.Namespace, out: IO[bytes]) -> None:
        self.a = a
        self.out = out
        self.rng = random.Random(a.seed)
        self.stats: Counter[str] = Counter()
        self.peers: set[str] = set()  # the distinct client addresses of the sessions

    def roll(self, fault: str) -> bool:
        p: float = getattr(self.a, fault)
        if p > 0 and self.rng.random() < p:
            self.stats[fault] += 1
            return True
        return False

    async def reply(self, w: asyncio.StreamWriter, line: bytes) -> None:
        if self.roll("slow"):
            await w.drain()
            await asyncio.sleep(self.rng.uniform(0, self.a.slow_s))
        w.write(line)

    def store(self, data: bytes, peer: str, replied: bool) -> None:
        data = b"\r\n" + data  # the id may be the first header
        i = data.find(ID)
        ident = data[i + len(ID) : data.index(b"\r\n", i + len(ID))] if i >= 0 else b"?"
        self.out.write(b"%s %s%s\n" % (ident, peer.encode(), b"" if replied else b" noreply"))
        self.stats["stored"] += 1

    async def session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.stats["sessions"] += 1
        peer = str((w.get_extra_info("peername") or ("?",))[0])
        self.peers.add(peer)
        mail = False  # a transaction is open (MAIL accepted, no end of data or RSET since)
        rcpts = 0  # recipients accepted in this transaction
        try:
            w.write(b"220 sink.bench.test ESMTP\r\n")
            while line := await r.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    mail, rcpts = False, 0
                    w.write(EHLO if verb == b"EHLO" else b"250 sink.bench.test\r\n")
                elif (verb == b"MAIL" and mail) or (verb in (b"RCPT", b"DATA") and not mail):
                    # as strict as Postfix: a client out of step (a reused session whose last
                    # transaction was not ended) is refused and counted, never served
                    self.stats["sequence_errors"] += 1
                    await self.reply(w, SEQUENCE_ERRORS[verb])
                elif verb == b"MAIL":
                    mail, rcpts = True, 0
                    await self.reply(w, b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT" and self.roll("tempfail_rcpt"):
                    await self.reply(w, b"451 4.3.0 fault: rcpt\r\n")
                elif verb == b"RCPT":
                    rcpts += 1
                    await self.reply(w, b"250 2.1.5 Ok\r\n")
                elif verb in (b"RSET", b"NOOP"):
                    if verb == b"RSET":
                        mail, rcpts = False, 0
                    await self.reply(w, b"250 2.0.0 Ok\r\n")
                elif verb == b"DATA" and not rcpts:
                    await self.reply(w, b"554 5.5.1 Error: no valid recipients\r\n")
                elif verb == b"DATA":
                    mail, rcpts = False, 0  # whatever the reply to the message, it ends here
                    await self.reply(w, b"354 go ahead\r\n")
                    await w.drain()
                    data = await r.readuntil(b"\r\n.\r\n")
                    if self.roll("drop_dot"):
                        return
                    if self.roll("drop_stored"):
                        self.store(data, peer, replied=False)
                        return
                    if self.roll("tempfail_dot"):
                        await self.reply(w, b"451 4.3.0 fault: dot\r\n")
                        continue
                    self.store(data, peer, replied=True)  # stored before the 250 is sent
                    await self.reply(w, b"250 2.0.0 Ok queued\r\n")
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


def read_stats(log: Path) -> dict[str, int]:
    """The JSON object the sink printed when it stopped (the last such line of its log)."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


@dataclass(frozen=True)
class Delivery:
    peer: str  # the client address the message came from
    replied: bool  # False: the sink dropped the connection instead of answering 250


def read_delivered(paths: Iterable[Path]) -> tuple[dict[str, Delivery], int]:
    """The messages in ``--delivered`` files, by id; and how many ids were stored more than once."""
    out: dict[str, Delivery] = {}
    dup = 0
    for p in paths:
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            ident, peer, *flag = line.split()
            dup += ident in out
            out[ident] = Delivery(peer, replied=not flag)
    return out, dup


def reconcile(acked: Iterable[str], delivered: Mapping[str, Delivery]) -> dict[str, list[str]]:
    """Compare the ids a client saw 250 for with what the sink stored.

    - ``lost``: acknowledged but not at the sink. Always a failure.
    - ``stored_noreply``: stored, then the sink dropped the connection before answering: the
      client was not told, would send it again, nothing is lost. Allowed.
    - ``replied_not_acked``: the sink answered 250 but the client did not record it. Allowed
      behind a relay (the relay got the 250, its client lost the connection and will retry);
      from a client talking to the sink directly, a 250 the client missed.
    """
    a = set(acked)
    return {
        "lost": sorted(a - delivered.keys()),
        "stored_noreply": sorted(k for k, d in delivered.items() if k not in a and not d.replied),
        "replied_not_acked": sorted(k for k, d in delivered.items() if k not in a and d.replied),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delivered", required=True)
    ap.add_argument("--tempfail-rcpt", type=float, default=0.0)
    ap.add_argument("--tempfail-dot", type=float, default=0.0)
    ap.add_argument("--drop-dot", type=float, default=0.0)
    ap.add_argument("--drop-stored", type=float, default=0.0)
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--slow-s", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with open(a.delivered, "ab") as out:
        sink = Sink(a, out)
        asyncio.run(sink.serve())
    print(json.dumps({**sink.stats, "peers": len(sink.peers)}), flush=True)


if __name__ == "__main__":
    main()
