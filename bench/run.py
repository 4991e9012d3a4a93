#!/usr/bin/env python3
"""spamgate benchmark (``make bench``): the same load direct to smtp-sink, through HAProxy in
TCP mode (a byte proxy: the physical limit of a proxy), and through spamgate, interleaved.

    smtp-source ──► (direct | haproxy | spamgate | spamgate+metrics) ──► smtp-sink

Workloads (W1-W3 as in ../shared/bench-peers): w1_single (4 KB, 50 sessions, 1 msg/session),
w1_multi (4 KB, 50 sessions, many msgs/session), w2_churn (tiny message per session), w3_large
(1 MiB, 10 sessions); W4 connection-stage rejection flood (a Python client from the blocklisted
127.0.99.0/24: banner 554, QUIT); W5 = w1_single through spamgate_dns: every check on
(dnsbl, rdns, helo_dns, sender_domain, rhsbl, spf, dkim, arc, dmarc, Authentication-Results)
against tests/harness/dns_server.py in this
process (answers cached by spamgate's resolver after the first session, as for a repeat
sender); W6 idle connections (RSS per connection).
Plus per-message latency (sequential client, one session) through each peer vs direct.

Each round runs every workload on every peer in turn; figures are medians over rounds and
ratios are taken to HAProxy's figure of the same round. Proxy CPU is utime+stime of the
proxy's whole process tree (/proc/<pid>/stat of spamgate's supervisor and its workers).
Output: bench/results/<UTC timestamp>/{runs.jsonl,summary.md}; the summary is also printed.

    .venv/bin/python bench/run.py [--rounds 3] [--quick] [--idle-conns 10000] [--only w1_single,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import machine, tree_cpu, tree_rss_kb
from procs import HAPROXY_MAXCONN, PORTS, ROOT, Proc, sbin, start_all, start_dns

FLOOD_NET = "127.0.99"  # blocklisted in bench/spamgate-bench.toml

# name: (smtp-source flags, COUNT for direct/haproxy, COUNT for spamgate)
WORKLOADS: dict[str, tuple[list[str], int, int]] = {
    "w1_single": (["-s", "50", "-l", "4096"], 30000, 8000),
    "w1_multi": (["-s", "50", "-l", "4096", "-d"], 60000, 15000),
    "w2_churn": (["-s", "50"], 30000, 8000),
    "w3_large": (["-s", "10", "-l", "1048576", "-d"], 1500, 400),
}
METRICS_WORKLOADS = ("w1_single", "w1_multi")  # spamgate with the admin listener and metrics on

# Processes: procs.py; CPU and RSS of a process tree: measure.py.


# -- loads -------------------------------------------------------------------------------------


def smtp_source(port: int, flags: list[str], count: int) -> tuple[float, int]:
    cmd = [sbin("smtp-source"), "-M", "bench.test", "-m", str(count), *flags, f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    return time.monotonic() - t0, r.returncode


def run_load(procs: dict[str, Proc], peer: str, workload: str, quick: bool) -> dict[str, Any]:
    flags, fast, slow = WORKLOADS[workload]
    count = fast if peer in ("direct", "haproxy") else slow
    if quick:
        count //= 5
    port = PORTS["sink"] if peer == "direct" else PORTS[peer]
    owner = procs["sink"] if peer == "direct" else procs[peer]
    cpu0 = tree_cpu(owner.pid)
    wall, code = smtp_source(port, flags, count)
    cpu = tree_cpu(owner.pid) - cpu0
    return {
        "kind": "load", "workload": workload, "peer": peer, "count": count, "wall_s": round(wall, 3),
        "rate": round(count / wall, 1), "ok": code == 0,
        # per message; for w3 (1 MiB messages) this is per MiB. For direct: the sink's CPU.
        "cpu_ms_per_msg": round(cpu * 1000 / count, 4),
    }  # fmt: skip


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


def latency(port: int, n: int) -> dict[str, float]:
    """Per-message latency (MAIL .. final 250 after DATA) of a sequential client, one session."""
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
    times.sort()
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99)] * 1000}


async def _flood(port: int, count: int, concurrency: int) -> tuple[float, int]:
    done = 0
    refused = 0

    async def worker(i: int) -> None:
        nonlocal done, refused
        src = f"{FLOOD_NET}.{i % 50 + 1}"
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


def flood(procs: dict[str, Proc], count: int) -> dict[str, Any]:
    """W4: connections from a blocklisted network, refused at connect (554), then QUIT."""
    cpu0 = tree_cpu(procs["spamgate"].pid)
    wall, refused = asyncio.run(_flood(PORTS["spamgate"], count, 50))
    cpu = tree_cpu(procs["spamgate"].pid) - cpu0
    return {
        "kind": "flood", "workload": "w4_flood", "peer": "spamgate", "count": count,
        "rate": round(count / wall, 1), "refused": refused, "ok": refused == count,
        "cpu_ms_per_conn": round(cpu * 1000 / count, 4),
    }  # fmt: skip


async def _idle(port: int, n: int, hold: float, measure: Any) -> tuple[int, int]:
    conns = []
    for i in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.{i // 5000 + 2}.1", 0))
        conns.append((r, w))

    async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        async def talk() -> bool:
            if not (await r.readline()).startswith(b"220"):
                return False
            w.write(b"EHLO idle.bench.test\r\n")
            while True:
                line = await r.readline()
                if not line or line[3:4] != b"-":
                    return line.startswith(b"250")

        try:
            return await asyncio.wait_for(talk(), 20)
        except (TimeoutError, ConnectionError):
            return False

    greeted = 0
    for i in range(0, n, 500):
        greeted += sum(await asyncio.gather(*(greet(r, w) for r, w in conns[i : i + 500])))
    await asyncio.sleep(hold)
    after = measure()
    for _, w in conns:
        w.close()
    return after, greeted


def idle(procs: dict[str, Proc], peer: str, n: int) -> dict[str, Any]:
    """W6: n idle connections (banner + EHLO, then silence); RSS growth of the peer per connection."""
    pid = procs[peer].pid

    def measure() -> int:
        samples = []
        for _ in range(3):
            samples.append(tree_rss_kb(pid))
            time.sleep(0.3)
        return int(statistics.median(samples))

    asyncio.run(_idle(PORTS[peer], 100, 0.5, lambda: 0))  # warm-up
    time.sleep(1)
    before = measure()
    after, opened = asyncio.run(_idle(PORTS[peer], n, 2.0, measure))
    time.sleep(2)
    return {
        "kind": "idle", "workload": "w6_idle", "peer": peer, "conns": opened,
        "rss_before_kb": before, "rss_after_kb": after,
        "kb_per_conn": round((after - before) / opened, 2),
    }  # fmt: skip


# -- summary -------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [f"# spamgate bench {meta['started']}", "", f"`{meta['command']}`", ""]
    out += [f"machine: {meta['machine']}", f"rounds: {meta['rounds']}", ""]
    loads = [r for r in runs if r["kind"] == "load"]
    peers = ["direct", "haproxy", "spamgate", "spamgate_metrics"]
    out += [
        "| workload | peer | msgs/s (median) | ratio to haproxy (same round) | proxy CPU ms/msg | all ok |"
    ]
    out += ["|---|---|---|---|---|---|"]
    for wl in WORKLOADS:
        for peer in peers:
            rs = [r for r in loads if r["workload"] == wl and r["peer"] == peer]
            if not rs:
                continue
            ratios = []
            for r in rs:
                h = [
                    x
                    for x in loads
                    if x["workload"] == wl and x["peer"] == "haproxy" and x["round"] == r["round"]
                ]
                if h:
                    ratios.append(r["rate"] / h[0]["rate"])
            cpu = med([r["cpu_ms_per_msg"] for r in rs])
            unit = " (per MiB)" if wl == "w3_large" else ""
            cpu_text = f"sink {cpu:.3f}" if peer == "direct" else f"{cpu:.3f}{unit}"
            out.append(
                f"| {wl} | {peer} | {med([r['rate'] for r in rs]):,.0f} | {med(ratios):.3f} | "
                f"{cpu_text} | {all(r['ok'] for r in rs)} |"
            )
    lat = [r for r in runs if r["kind"] == "latency"]
    if lat:
        out += [
            "",
            "| latency peer | p50 ms | p99 ms | added p50 ms vs direct | added p99 ms |",
            "|---|---|---|---|---|",
        ]
        for peer in peers:
            rs = [r for r in lat if r["peer"] == peer]
            if not rs:
                continue
            added50, added99 = [], []
            for r in rs:
                d = [x for x in lat if x["peer"] == "direct" and x["round"] == r["round"]]
                if d:
                    added50.append(r["p50_ms"] - d[0]["p50_ms"])
                    added99.append(r["p99_ms"] - d[0]["p99_ms"])
            out.append(
                f"| {peer} | {med([r['p50_ms'] for r in rs]):.3f} | {med([r['p99_ms'] for r in rs]):.3f} | "
                f"{med(added50):.3f} | {med(added99):.3f} |"
            )
    fl = [r for r in runs if r["kind"] == "flood"]
    if fl:
        out += [
            "",
            "| W4 rejection flood | conn/s (median) | spamgate CPU ms/conn | all refused |",
            "|---|---|---|---|",
        ]
        rate, cpu = med([r["rate"] for r in fl]), med([r["cpu_ms_per_conn"] for r in fl])
        out.append(f"| spamgate | {rate:,.0f} | {cpu:.3f} | {all(r['ok'] for r in fl)} |")
    idl = [r for r in runs if r["kind"] == "idle"]
    if idl:
        out += [
            "",
            "| W6 idle peer | connections | RSS before MB | RSS after MB | KB per connection |",
            "|---|---|---|---|---|",
        ]
        for r in idl:
            before, after = r["rss_before_kb"] / 1024, r["rss_after_kb"] / 1024
            out.append(
                f"| {r['peer']} | {r['conns']} | {before:.1f} | {after:.1f} | {r['kb_per_conn']:.2f} |"
            )
    w5 = [r for r in loads if r["peer"] == "spamgate_dns"]
    if w5:
        ratios = []
        for r in w5:
            w1 = [x for x in loads if x["workload"] == r["workload"] and x["peer"] == "spamgate"]
            w1 = [x for x in w1 if x["round"] == r["round"]]
            if w1:
                ratios.append(r["rate"] / w1[0]["rate"])
        rate, cpu = med([r["rate"] for r in w5]), med([r["cpu_ms_per_msg"] for r in w5])
        out += [
            "",
            "| W5: w1_single, all checks on | msgs/s | ratio to W1 spamgate (same round) "
            "| CPU ms/msg | all ok |",
            "|---|---|---|---|---|",
            f"| spamgate_dns | {rate:,.0f} | {med(ratios):.3f} | {cpu:.3f} | {all(r['ok'] for r in w5)} |",
        ]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="counts / 5 (smoke test)")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--flood-conns", type=int, default=20000)
    ap.add_argument("--latency-msgs", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated workloads (w1_single,...,latency,w4,w5,w6)")
    ap.add_argument("--summarize", metavar="DIR", help="print the summary of a finished run")
    args = ap.parse_args()
    if args.summarize:
        d = Path(args.summarize)
        runs = [json.loads(x) for x in (d / "runs.jsonl").read_text().splitlines() if x]
        meta = json.loads((d / "meta.json").read_text())
        more = Path(args.summarize) / "more.jsonl"  # e.g. a separate --only w6 run appended
        if more.exists():
            runs += [json.loads(x) for x in more.read_text().splitlines() if x]
        print(summarize(runs, meta))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started on the way out
    only = set(filter(None, args.only.split(",")))
    if "w5" in only:  # W5 is compared with W1-single of the same round
        only.add("w1_single")

    def want(name: str) -> bool:
        return not only or name in only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_fd = args.idle_conns * 3 + 5000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want_fd), max(hard, want_fd)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / stamp
    rundir.mkdir(parents=True)
    meta = {"started": stamp, "command": " ".join(sys.argv), "machine": machine(), "rounds": args.rounds}
    (rundir / "meta.json").write_text(json.dumps(meta, indent=2))
    runs: list[dict[str, Any]] = []
    procs: dict[str, Proc] = {}
    dns = start_dns()
    try:
        start_all(rundir, args.idle_conns, procs, dns)
        with open(rundir / "runs.jsonl", "w") as jl:

            def record(r: dict[str, Any], rnd: int) -> None:
                r["round"] = rnd
                runs.append(r)
                jl.write(json.dumps(r) + "\n")
                jl.flush()
                print(json.dumps(r), flush=True)

            # warm-up: the pools and caches of every peer
            for peer in ("haproxy", "spamgate", "spamgate_metrics", "spamgate_dns"):
                smtp_source(PORTS[peer], ["-s", "20"], 500)
            for rnd in range(args.rounds):
                for wl in WORKLOADS:
                    if not want(wl):
                        continue
                    for peer in ("direct", "haproxy", "spamgate", "spamgate_metrics", "spamgate_dns"):
                        if peer == "spamgate_metrics" and wl not in METRICS_WORKLOADS:
                            continue
                        if peer == "spamgate_dns" and (wl != "w1_single" or not want("w5")):
                            continue
                        record(run_load(procs, peer, wl, args.quick), rnd)
                if want("latency"):
                    n = args.latency_msgs // (5 if args.quick else 1)
                    for peer in ("direct", "haproxy", "spamgate", "spamgate_metrics"):
                        port = PORTS["sink"] if peer == "direct" else PORTS[peer]
                        record({"kind": "latency", "peer": peer, **latency(port, n)}, rnd)
                if want("w4"):
                    record(flood(procs, args.flood_conns // (5 if args.quick else 1)), rnd)
            if want("w6"):
                for peer in ("haproxy", "spamgate"):
                    n = min(args.idle_conns, HAPROXY_MAXCONN) if peer == "haproxy" else args.idle_conns
                    record(idle(procs, peer, n), 0)
    finally:
        for p in procs.values():
            p.stop()
        dns.close()
    summary = summarize(runs, meta)
    (rundir / "summary.md").write_text(summary)
    print(summary)
    print(f"results: {rundir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
