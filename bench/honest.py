#!/usr/bin/env python3
"""The honest benchmark: W1-single under the configuration a site ships, W5-real, and the
agreement of bench/loadgen.py with smtp-source; interleaved rounds, ratios within a round.

Peers (all in front of the same smtp-sink):
  direct, haproxy         the references (byte proxy = the limit of a proxy)
  spamgate                bench/spamgate-bench.toml: the flattering configuration of the
                          earlier figures (memory:// store, every client 127.0.0.1 = exempt)
  spamgate_honest         bench/spamgate-honest.toml: SQLite store, no exempt network, rate
                          limits / reputation / greylisting counting per client, admin listener
  spamgate_honest_mem     the same on memory:// (what the SQLite store costs, by difference)
  spamgate_real           the honest configuration with every DNS and authentication check on (W5-real:
                          bench/realmail.py's 1,000 signed sender domains from 200 clients)

Each round, W1-single (4 KB, 50 sessions, 1 message per session):
  smtp-source  -> direct, haproxy, spamgate            (the old generator, 127.0.0.1 only)
  loadgen      -> direct, haproxy, spamgate            (the same load: agreement with the above)
  loadgen      -> spamgate_honest (and _mem) from 1,000 client addresses (W1-honest)
  loadgen      -> spamgate_real, the W5-real pool from its 200 clients (W5-real), with the DNS
                  cache hit rate of the round read from spamgate's /metrics

    .venv/bin/python bench/honest.py [--rounds 3] [--quick]

Output: bench/results/<stamp>-honest/{runs.jsonl,meta.json,summary.md}.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import realmail
from load import smtp_source
from loadgen import loadgen
from measure import machine, tree_cpu
from procs import (
    CONFIG,
    PORTS,
    ROOT,
    Proc,
    check_ports_free,
    dns_env,
    spamgate_env,
    start_dns,
    start_haproxy,
    start_sink,
    start_spamgate,
    wait_banner,
)
from report import Recorder, med, read_run, write_meta

HONEST_CONFIG = ROOT / "bench" / "spamgate-honest.toml"
PORTS.update({"spamgate_honest": 20606, "spamgate_real": 20607, "spamgate_honest_mem": 20610})
ADMIN = {"spamgate_honest": 20608, "spamgate_real": 20609, "spamgate_honest_mem": 20611}
W1_FLAGS = ["-s", "50", "-l", "4096"]  # smtp-source
W1_GEN = ["--sessions", "50", "--size", "4096", "--per-session", "1"]  # loadgen, the same load
COUNTS = {
    "direct": 20000, "haproxy": 12000, "spamgate": 4000, "spamgate_honest": 4000,
    "spamgate_honest_mem": 4000, "spamgate_real": 3000,
}  # fmt: skip
HONEST_SOURCES = 1000


def honest_env(name: str, dns: Any) -> dict[str, str]:
    env = spamgate_env("spamgate", dns)
    env["SPAMGATE__STORE__URL"] = f"sqlite:///{name}.db"  # in the run directory (the cwd)
    if name == "spamgate_honest_mem":  # the honest configuration but memory://: the store's share
        env["SPAMGATE__STORE__URL"] = "memory://"
    env["SPAMGATE__METRICS__LISTEN"] = f"127.0.0.1:{ADMIN[name]}"
    if name == "spamgate_real":
        env.update(dns_env(dns))
    return env


def metric_sums(name: str, metric: str, label: str) -> dict[str, float]:
    """Sum of ``metric``'s samples by the value of ``label`` on ``name``'s /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[name]}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric) + 1 :].rsplit("} ", 1)
            key = dict(kv.split("=", 1) for kv in labels.split(",")).get(label, '""').strip('"')
            out[key] = out.get(key, 0.0) + float(value)
    return out


def dns_outcomes(name: str) -> dict[str, float]:
    return metric_sums(name, "spamgate_dns_queries_total", "outcome")


def run_one(procs: dict[str, Proc], peer: str, gen: str, count: int, flags: list[str]) -> dict[str, Any]:
    owner = procs["sink" if peer == "direct" else peer]
    port = PORTS["sink" if peer == "direct" else peer]
    dns0 = dns_outcomes(peer) if peer == "spamgate_real" else {}
    load = f"{os.getloadavg()[0]:.2f}"
    cpu0 = tree_cpu(owner.pid)
    if gen == "smtp-source":
        wall, code = smtp_source(port, W1_FLAGS, count)
        res = {"ok": count if code == 0 else 0, "wall_s": round(wall, 3), "rate": round(count / wall, 1)}
    else:
        res = loadgen(port, count, *flags)
    cpu = tree_cpu(owner.pid) - cpu0
    rec = {"kind": "honest", "peer": peer, "gen": gen, "count": count, "load": load, **res}
    rec["cpu_ms_per_msg"] = round(cpu * 1000 / count, 4)
    rec["all_ok"] = res["ok"] == count
    if dns0:
        d1 = dns_outcomes(peer)
        delta = {k: d1.get(k, 0) - dns0.get(k, 0) for k in d1}
        total = sum(delta.values())
        rec["dns"] = delta
        rec["dns_cache_hit_rate"] = round(delta.get("cache_hit", 0) / total, 4) if total else None
    return rec


def plan(pool: Path) -> list[tuple[str, str, list[str]]]:
    honest = [*W1_GEN, "--sources", str(HONEST_SOURCES)]
    real = ["--sessions", "50", "--per-session", "1", "--pool", str(pool)]
    return [
        *((p, "smtp-source", []) for p in ("direct", "haproxy", "spamgate")),
        *((p, "loadgen", W1_GEN) for p in ("direct", "haproxy", "spamgate")),
        ("spamgate_honest", "loadgen", honest),
        ("spamgate_honest_mem", "loadgen", honest),
        ("spamgate_real", "loadgen", real),
    ]


def _ratio(runs: list[dict[str, Any]], r: dict[str, Any], peer: str, gen: str) -> float | None:
    """``r``'s rate over ``peer``'s (through ``gen``) in the same round."""
    ref = [x for x in runs if x["peer"] == peer and x["gen"] == gen and x["round"] == r["round"]]
    return r["rate"] / ref[0]["rate"] if ref else None


def summarize(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"# honest bench {meta['started']}",
        "",
        f"`{meta['command']}`",
        "",
        f"machine: {meta['machine']}",
        "",
    ]
    out += ["| peer | generator | msgs/s (median) | ratio to haproxy | ratio to spamgate (flattering) | "
            "CPU ms/msg | load avg by round | all 250 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for peer in ("direct", "haproxy", "spamgate", "spamgate_honest", "spamgate_honest_mem", "spamgate_real"):
        for gen in ("smtp-source", "loadgen"):
            rs = [r for r in runs if r["peer"] == peer and r["gen"] == gen]
            if not rs:
                continue
            to_h = [x for r in rs if (x := _ratio(runs, r, "haproxy", gen)) is not None]
            to_s = [x for r in rs if (x := _ratio(runs, r, "spamgate", gen)) is not None]
            out.append(
                f"| {peer} | {gen} | {med([r['rate'] for r in rs]):,.0f} | {med(to_h):.3f} | "
                f"{med(to_s):.3f} | {med([r['cpu_ms_per_msg'] for r in rs]):.3f} | "
                f"{', '.join(r['load'] for r in rs)} | "
                f"{all(r['all_ok'] for r in rs)} |"
            )
    real = [r for r in runs if r["peer"] == "spamgate_real"]
    w5 = [x for r in real if (x := _ratio(runs, r, "spamgate_honest", "loadgen")) is not None]
    if w5:
        out += ["", "W5-real / W1-honest, same round: " + ", ".join(f"{x:.3f}" for x in w5)]
    hits = [r["dns_cache_hit_rate"] for r in real if r.get("dns_cache_hit_rate") is not None]
    if hits:
        out += ["DNS cache hit rate of W5-real by round: " + ", ".join(f"{h:.1%}" for h in hits)]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="counts / 5")
    ap.add_argument("--summarize", metavar="DIR", help="print the summary of a finished run")
    args = ap.parse_args()
    if args.summarize:
        runs, meta = read_run(Path(args.summarize))
        print(summarize(runs, meta))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / f"{stamp}-honest"
    rundir.mkdir(parents=True)
    meta: dict[str, Any] = {"started": stamp, "command": " ".join(sys.argv), "machine": machine()}
    procs: dict[str, Proc] = {}
    runs: list[dict[str, Any]] = []
    dns = start_dns()
    try:
        check_ports_free()
        meta["realmail"] = realmail.build(dns, rundir / "pool.pkl")
        write_meta(rundir, meta)
        start_sink(rundir, 0, procs)
        start_haproxy(rundir, procs)
        start_spamgate(rundir, "spamgate", procs, spamgate_env("spamgate", dns), CONFIG)
        for name in ADMIN:
            start_spamgate(rundir, name, procs, honest_env(name, dns), HONEST_CONFIG)
        for name in ("haproxy", "spamgate", *ADMIN):
            wait_banner(PORTS[name])
        with Recorder(rundir, runs) as rec:
            for peer, gen, flags in plan(rundir / "pool.pkl"):  # warm-up: pools, the store
                if peer not in ("direct", "spamgate_real"):  # W5-real's round 0 starts cold
                    run_one(procs, peer, gen, 500, flags)
            for rnd in range(args.rounds):
                for peer, gen, flags in plan(rundir / "pool.pkl"):
                    count = COUNTS[peer] // (5 if args.quick else 1)
                    rec.record(run_one(procs, peer, gen, count, flags), rnd)
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
