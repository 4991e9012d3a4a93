#!/usr/bin/env python3
"""Latency the external scanners add per message, and proof that they run side by side.

Starts the real servers of the tests (tests/harness: clamd with the test signature, rspamd
with its own config dir and dead DNS, spamd -L), a recording sink and one spamgate per
configuration: no scanner, each scanner alone, all three. A sequential client sends the same
4 KB message N times on one SMTP session per configuration; the figure is the time of one
``sendmail`` (MAIL..the 250 after DATA). The added latency is the difference to "none" at the
same percentile. Scanners run concurrently when "all three" adds about as much as the slowest
scanner alone, not the sum. SpamAssassin alone dominates (hundreds of ms of Perl per message
against a few ms for the others), so a second series puts a loopback relay that holds each
connection ``--delay`` ms before passing it on (a remote or loaded scanner) in front of every
scanner: there the sum and the maximum differ by two delays.

    .venv/bin/python bench/scanner_latency.py [--messages 100] [--rounds 2] [--delay 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.clamd import Clamd  # noqa: E402
from tests.harness.clients import message, smtp  # noqa: E402
from tests.harness.proc import Spamgate  # noqa: E402
from tests.harness.rspamd import Rspamd  # noqa: E402
from tests.harness.sink import Sink  # noqa: E402
from tests.harness.spamd import Spamd  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class DelayRelay:
    """Loopback TCP relays, one per target, in a thread: each accepted connection waits
    ``delay`` seconds, then is piped to its target both ways."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def add(self, target: str) -> str:
        host, port = target.rsplit(":", 1)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while chunk := await r.read(65536):
                    w.write(chunk)
                    await w.drain()
                if w.can_write_eof():
                    w.write_eof()
            except OSError:
                w.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)  # a strong reference until the relay ends
            try:
                await asyncio.sleep(self.delay)
                ur, uw = await asyncio.open_connection(host, int(port))
                await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
                uw.close()
            finally:
                cw.close()
                self.tasks.discard(task)

        async def serve() -> int:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            return int(server.sockets[0].getsockname()[1])

        port_out = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(5)
        return f"127.0.0.1:{port_out}"


def table(samples: dict[str, list[float]], names: list[str]) -> None:
    base50 = statistics.median(samples["none"])
    base90 = pct(samples["none"], 0.9)
    print("| scanners | p50 ms | p90 ms | added p50 ms | added p90 ms |")
    print("|---|---|---|---|---|")
    for name, vals in samples.items():
        p50, p90 = statistics.median(vals), pct(vals, 0.9)
        print(f"| {name} | {p50:.2f} | {p90:.2f} | {p50 - base50:+.2f} | {p90 - base90:+.2f} |")
    singles = [statistics.median(samples[n]) - base50 for n in names]
    every = statistics.median(samples["all three"]) - base50
    print(
        f"slowest alone {max(singles):.2f} ms, sum of the three {sum(singles):.2f} ms, "
        f"all three {every:.2f} ms"
    )


def run(port: int, n: int, data: bytes) -> list[float]:
    out = []
    with smtp(port, "127.0.0.9", timeout=30) as c:
        c.ehlo("mail.sender.test")
        for _ in range(5):  # warm-up: connections, spamd children, caches
            c.sendmail("alice@sender.test", ["bob@example.test"], data)
        for _ in range(n):
            t0 = time.perf_counter()
            c.sendmail("alice@sender.test", ["bob@example.test"], data)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def configs(addresses: dict[str, str]) -> dict[str, dict[str, Any]]:
    scanners = {name: {"enabled": True, "address": a, "timeout": "9s"} for name, a in addresses.items()}
    out: dict[str, dict[str, Any]] = {"none": {}}
    out.update({name: {name: opts} for name, opts in scanners.items()})
    out["all three"] = dict(scanners)
    return out


def series(
    work: Path, sink: Sink, cfgs: dict[str, dict[str, Any]], args: Any, data: bytes
) -> dict[str, list[float]]:
    gates: dict[str, Spamgate] = {}
    try:
        for name, checks in cfgs.items():
            cfg = {
                "relay": {"downstream": f"127.0.0.1:{sink.port}"},
                "log": {"level": "info"},
                "checks": {"greylist": {"enabled": False}, **checks},
            }
            gates[name] = Spamgate(work / name.replace(" ", "_"), cfg).start()
        samples: dict[str, list[float]] = {name: [] for name in cfgs}
        for _ in range(args.rounds):  # interleaved: each round runs every configuration
            for name, sg in gates.items():
                samples[name] += run(sg.port, args.messages, data)
        return samples
    finally:
        for sg in gates.values():
            sg.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--delay", type=float, default=100.0, help="ms added by the relay (second series)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scanner-bench-"))
    clamd = Clamd(work / "clamd").start()
    rspamd = Rspamd(work / "rspamd").start()
    spamd = Spamd(work / "spamd").start()
    sink = Sink().start()
    body = "".join(f"Line {i} of a plain text message about the quarterly figures.\r\n" for i in range(60))
    data = message("bench", body=body)
    direct = {"clamav": clamd.address, "rspamd": rspamd.address, "spamassassin": spamd.address}
    try:
        print(f"{len(data)} B message, {args.rounds} x {args.messages} sequential messages per configuration")
        print("\nScanners as they are (loopback):")
        table(series(work / "direct", sink, configs(direct), args, data), list(direct))
        relay = DelayRelay(args.delay / 1000)
        delayed = {name: relay.add(a) for name, a in direct.items()}
        print(f"\nEach scanner behind a relay adding {args.delay:g} ms:")
        table(series(work / "delayed", sink, configs(delayed), args, data), list(direct))
    finally:
        sink.close()
        for server in (clamd, rspamd, spamd):
            server.stop()


if __name__ == "__main__":
    main()
