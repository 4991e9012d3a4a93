#!/usr/bin/env python3
"""Profile one spamgate worker under W1-single with the honest configuration (py-spy).

Starts smtp-sink and spamgate (bench/spamgate-honest.toml, one worker, as bench/honest.py's
spamgate_honest), samples the worker with ``py-spy record --format raw`` (collapsed stacks,
only samples where the worker was on the CPU: py-spy leaves idle threads out) while loadgen.py
sends ``--count`` 4 KB messages, one per session, from 1,000 client addresses, and prints the
top functions by own time and by inclusive time, as shares of the samples.

    .venv/bin/python bench/profile_w1.py [--count 20000] [--rate 200] [--top 30]

Needs py-spy (the ``bench`` extra) and ptrace rights on the worker (root, or
kernel.yama.ptrace_scope = 0). Output: bench/results/<stamp>-profile/{stacks.txt,top.md}.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from honest import HONEST_CONFIG, honest_env
from loadgen import loadgen
from measure import tree_pids
from procs import PORTS, ROOT, Proc, check_ports_free, start_sink, start_spamgate, wait_banner

NAME = "spamgate_honest"


def frame_name(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'module.py:func'."""
    func, _, where = frame.partition(" (")
    path = where.split(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{short}:{func}" if short else func


def top_tables(stacks: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        count = int(n)
        frames = [frame_name(f) for f in stack.split(";")[1:]]  # [0] is the process/thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"samples on CPU: {total}", "", "| own % | function |", "|---|---|"]
    out += [f"| {c * 100 / total:.1f} | `{f}` |" for f, c in own.most_common(top)]
    out += ["", "| inclusive % | function |", "|---|---|"]
    out += [f"| {c * 100 / total:.1f} | `{f}` |" for f, c in incl.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", type=int, default=4096, help="message size (1048576: W3's load)")
    ap.add_argument("--per-session", type=int, default=1, help="messages per session (0: no limit)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / f"{stamp}-profile"
    rundir.mkdir(parents=True)
    procs: dict[str, Proc] = {}
    try:
        check_ports_free()
        start_sink(rundir, 0, procs)
        env = honest_env(NAME, None)
        env["SPAMGATE__SERVER__WORKERS"] = "1"
        start_spamgate(rundir, NAME, procs, env, HONEST_CONFIG)
        wait_banner(PORTS[NAME])
        flags = ["--sessions", str(args.sessions), "--size", str(args.size), "--sources", "1000"]
        flags += ["--per-session", str(args.per_session)]
        loadgen(PORTS[NAME], max(50, min(2000, args.count // 4)), *flags)  # warm-up
        worker = max(tree_pids(procs[NAME].pid))  # the supervisor's one child
        stacks = rundir / "stacks.txt"
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(worker), "--rate", str(args.rate), "--format", "raw",
             "--output", str(stacks), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)
        res = loadgen(PORTS[NAME], args.count, *flags)
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        err = spy.communicate(timeout=60)[1]
    finally:
        for p in procs.values():
            p.stop()
    if not stacks.exists():
        print(err.decode(), file=sys.stderr)
        return 1
    load = f"{args.size}-byte messages, {args.per_session or 'any'} per session"
    report = f"{load}, honest, 1 worker: {res}\n\n" + top_tables(stacks, args.top)
    (rundir / "top.md").write_text(report)
    print(report)
    print(f"results: {rundir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
