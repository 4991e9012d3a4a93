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
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import workloads
from measure import machine
from procs import ROOT, Proc, start_all, start_dns
from report import Recorder, read_run, summarize, write_meta


def raise_nofile(idle_conns: int) -> None:
    """Room for W6's idle connections (three descriptors each, with the sink's and HAProxy's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_fd = idle_conns * 3 + 5000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want_fd), max(hard, want_fd)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
        print(summarize(*read_run(Path(args.summarize))))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started on the way out
    only = set(filter(None, args.only.split(",")))
    if "w5" in only:  # W5 is compared with W1-single of the same round
        only.add(workloads.W5_WORKLOAD)

    def want(name: str) -> bool:
        return not only or name in only

    div = workloads.QUICK_DIVISOR if args.quick else 1
    raise_nofile(args.idle_conns)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / stamp
    rundir.mkdir(parents=True)
    meta = {"started": stamp, "command": " ".join(sys.argv), "machine": machine(), "rounds": args.rounds}
    write_meta(rundir, meta)
    runs: list[dict[str, Any]] = []
    procs: dict[str, Proc] = {}
    dns = start_dns()
    try:
        start_all(rundir, args.idle_conns, procs, dns)
        with Recorder(rundir, runs) as rec:
            workloads.warm_up()
            for rnd in range(args.rounds):
                for wl in workloads.WORKLOADS:
                    if not want(wl):
                        continue
                    for peer in workloads.load_peers(wl, want):
                        rec.record(workloads.run_load(procs, peer, wl, args.quick), rnd)
                if want("latency"):
                    for peer in workloads.LATENCY_PEERS:
                        rec.record(workloads.latency(peer, args.latency_msgs // div), rnd)
                if want("w4"):
                    rec.record(workloads.flood(procs, args.flood_conns // div), rnd)
            if want("w6"):
                for peer in workloads.IDLE_PEERS:
                    rec.record(
                        workloads.idle(procs, peer, workloads.idle_conns_for(peer, args.idle_conns)), 0
                    )
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
