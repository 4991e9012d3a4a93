#!/usr/bin/env python3
"""`make bench-content`: the content inspection workload, a mixed corpus through three spamgates.

Starts smtp-sink, the bench's DNS server, a real clamd (a one-signature database it writes,
``StreamMaxLength`` 25M, nothing downloaded) and a real rspamd (Debian's rules, two normal
workers, no Redis, fuzzy off: tests/harness; its DNS is a real rbldnsd serving one dummy zone,
which answers REFUSED at once to everything rspamd asks: a resolver that knows nothing, as
fast as a local cache; the bench's Python DNS server would add ~100 ms to an HTML message, whose
60 links rspamd looks up in ~65 queries), and three spamgates (a fourth for one phase) on
bench/spamgate-bench.toml in front of the same sink (2 workers each, metrics on):

  relay       content checks off (mime, attachments, phishing, uribl), no scanner: a pure relay
  content     mime + attachments + phishing + uribl (one local list, ``uribl.bench.test``,
              listing nothing: every lookup an NXDOMAIN, cached by spamgate's resolver)
  scanners    content + clamav + rspamd

The corpus is bench/corpus.py's (seeded): 40 % text (2-4 KB), 30 % HTML newsletters (20 KB,
multipart/alternative), 25 % attachments (PDF-like, zip, docx-like), 5 % ~1 MiB. Each round,
for every configuration in turn (the order rotates by round):

  mixed       the corpus, 20 concurrent sessions, one message per session: msgs/s and
              spamgate's process-tree CPU per message (clamd's and rspamd's too). CPU is
              measured twice: utime+stime in clock ticks (``cpu_ms_per_msg``, 10 ms steps per
              process) and the live threads' schedstat nanoseconds (``cpu_ns_ms_per_msg``,
              precise; used for the differences by kind)
  by kind     each kind alone, the same way, in 3 blocks per round (every configuration in
              each block; differences are taken within a block): CPU per message by kind
              (content - relay = what the four content checks cost, e.g. on the 20 KB HTML
              message); here a fourth spamgate, ``local`` (content with uribl off), gives
              uribl's share by difference
  sequential  each kind alone on one session, one message at a time: latency per message
              (MAIL to the 250 after DATA); for ``scanners`` also the scanners' own time
              from spamgate's ``spamgate_scanner_seconds`` histograms (deltas over the run)

Every message must get 250: anything else is reported as a failure (``fails``) with its reply.
Uses the ports 20620-20628 (not the other workloads' 20600-20611).

    .venv/bin/python bench/content_load.py [--rounds 2] [--quick] [--corpus 200] [--seed 11]

Output: bench/results/<stamp>-content/{runs.jsonl,meta.json,summary.md,*.log,times/}.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import corpus
from content_cost import calibration
from loadgen import loadgen
from measure import machine, tree_cpu, tree_cpu_ns
from procs import PORTS, ROOT, Proc, port_free, start_dns, start_sink, wait_banner
from report import Recorder, med, read_run, write_meta

sys.path.insert(0, str(ROOT))
from tests.harness.clamd import Clamd
from tests.harness.rbldnsd import Rbldnsd, public_dir
from tests.harness.rspamd import Rspamd

CONFIG = ROOT / "bench" / "spamgate-bench.toml"
CONFIGS = ("relay", "content", "scanners")
LOCAL = "local"  # content without uribl, in the by-kind phase only: uribl's share by difference
PORTS.update({"sink": 20620, "relay": 20621, "content": 20622, "scanners": 20623, LOCAL: 20627})
ADMIN = {"relay": 20624, "content": 20625, "scanners": 20626, LOCAL: 20628}
SESSIONS = 20
URIBL = "uribl.bench.test"
CONTENT_CHECKS = ("MIME", "ATTACHMENTS", "PHISHING", "URIBL")
# Messages per run (--quick: / 4): the mixed corpus at 20 sessions; each kind alone at 20
# sessions; each kind alone, sequentially.
MIXED = 600
BY_KIND = {"text": 600, "html": 600, "attach": 300, "large": 45}
BLOCKS = 3  # each kind's by-kind count in this many blocks, every configuration in each
SEQUENTIAL = {"text": 60, "html": 60, "attach": 40, "large": 12}
SCANNERS = ("clamav", "rspamd")


class BenchRspamd(Rspamd):
    """The tests' rspamd with two normal workers (Debian's default: one per core)."""

    def write_config(self) -> Path:
        conf = super().write_config()
        conf.write_text(conf.read_text().replace("count = 1;", "count = 2;"))
        return conf


def spamgate_env(name: str, dns: Any, clamd: Clamd, rspamd: Rspamd) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # this tree's proxy/, whatever the venv's editable install says
    env["SPAMGATE__METRICS__LISTEN"] = f"127.0.0.1:{ADMIN[name]}"
    env["SPAMGATE__DNS__NAMESERVERS"] = f'["{dns.address}"]'
    env["SPAMGATE__DNS__TIMEOUT"] = "1s"
    if name == "relay":
        for check in CONTENT_CHECKS:
            env[f"SPAMGATE__CHECKS__{check}__ENABLED"] = "false"
        return env
    if name == LOCAL:
        env["SPAMGATE__CHECKS__URIBL__ENABLED"] = "false"
        return env
    env["SPAMGATE__CHECKS__URIBL__ZONES"] = f'["{URIBL}*5"]'
    if name == "scanners":
        env["SPAMGATE__CHECKS__CLAMAV__ENABLED"] = "true"
        env["SPAMGATE__CHECKS__CLAMAV__ADDRESS"] = clamd.address
        env["SPAMGATE__CHECKS__RSPAMD__ENABLED"] = "true"
        env["SPAMGATE__CHECKS__RSPAMD__ADDRESS"] = rspamd.address
    return env


def start_spamgate(rundir: Path, name: str, procs: dict[str, Proc], env: dict[str, str]) -> None:
    cmd = [
        sys.executable, "-m", "proxy", "run", "--config", str(CONFIG),
        "--listen", f"127.0.0.1:{PORTS[name]}", "--downstream", f"127.0.0.1:{PORTS['sink']}",
    ]  # fmt: skip
    procs[name] = Proc(name, cmd, rundir / f"{name}.log", env=env)


def _labels(text: str) -> dict[str, str]:
    pairs = (kv.split("=", 1) for kv in text.rstrip("}").split(",") if "=" in kv)
    return {k: v.strip('"') for k, v in pairs}


def read_metrics(name: str) -> dict[str, dict[str, float]]:
    """From ``name``'s /metrics: ``spamgate_scanner_seconds`` by scanner (``count``, ``sum`` and
    each bucket's cumulative count, key ``le=<bound in s>``) and, under ``"dns"``, the DNS
    queries by outcome (``spamgate_dns_queries_total``: cache_hit, nxdomain...)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[name]}/metrics", timeout=10).read().decode()
    out: dict[str, dict[str, float]] = {"dns": {}}
    for line in text.splitlines():
        if line.startswith("spamgate_scanner_seconds_"):
            series, value = line.rsplit(" ", 1)
            kind, _, labels = series[len("spamgate_scanner_seconds_") :].partition("{")
            lab = _labels(labels)
            h = out.setdefault(lab.get("scanner", "?"), {})
            key = f"le={lab['le']}" if kind == "bucket" else kind
            h[key] = h.get(key, 0.0) + float(value)
        elif line.startswith("spamgate_dns_queries_total{"):
            labels, value = line[len("spamgate_dns_queries_total{") :].rsplit(" ", 1)
            outcome = _labels(labels).get("outcome", "?")
            out["dns"][outcome] = out["dns"].get(outcome, 0.0) + float(value)
    return out


def hist_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per scanner over a run: exchanges, mean, and p50/p99 interpolated in the buckets (ms)."""
    out: dict[str, Any] = {}
    for scanner, h in after.items():
        if scanner == "dns":
            continue
        b = before.get(scanner, {})
        d = {k: v - b.get(k, 0.0) for k, v in h.items()}
        n = d.get("count", 0.0)
        if not n:
            continue
        buckets = sorted(
            (float("inf") if k[3:] == "+Inf" else float(k[3:]), v)
            for k, v in d.items()
            if k.startswith("le=")
        )
        out[scanner] = {
            "n": int(n),
            "mean_ms": round(d["sum"] / n * 1000, 2),
            "p50_ms": _quantile(buckets, n, 0.5),
            "p99_ms": _quantile(buckets, n, 0.99),
        }
    return out


def _quantile(buckets: list[tuple[float, float]], n: float, q: float) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket that holds rank q*n (ms)."""
    lo, below = 0.0, 0.0
    for le, cum in buckets:
        if cum >= q * n:
            if le == float("inf"):
                return round(lo * 1000, 2)
            inside = cum - below
            frac = (q * n - below) / inside if inside else 1.0
            return round((lo + (le - lo) * frac) * 1000, 2)
        lo, below = le, cum
    return float("nan")


def read_times(path: Path) -> tuple[list[float], list[str]]:
    """Latencies (ms) and non-250 replies of a loadgen ``--times`` file (one process)."""
    lat, fails = [], []
    for line in Path(f"{path}.0").read_text().splitlines():
        _, secs, reply = line.split("\t", 2)
        lat.append(float(secs) * 1000)
        if not reply.startswith("250"):
            fails.append(reply)
    return lat, fails


class Bench:
    def __init__(self, rundir: Path, procs: dict[str, Proc], clamd: Clamd, rspamd: Rspamd) -> None:
        self.rundir = rundir
        self.procs = procs
        self.clamd = clamd
        self.rspamd = rspamd
        self.pools: dict[str, Path] = {}
        self.seq = 0
        (rundir / "times").mkdir()

    def write_pools(self, msgs: list[tuple[str, bytes]]) -> dict[str, Any]:
        """One pickled loadgen pool for the mixed corpus and one per kind; sizes by kind."""
        by: dict[str, list[bytes]] = {"mixed": [m for _, m in msgs]}
        for kind, m in msgs:
            by.setdefault(kind, []).append(m)
        stats: dict[str, Any] = {}
        for key, ms in by.items():
            self.pools[key] = self.rundir / f"pool-{key}.pkl"
            pool = [("127.0.0.1", "bench.test", corpus.sender(m), corpus.RCPT, m) for m in ms]
            self.pools[key].write_bytes(pickle.dumps(pool))
            stats[key] = {"n": len(ms), "mean_bytes": round(sum(map(len, ms)) / len(ms))}
        return stats

    def run(self, phase: str, cfg: str, kind: str, count: int) -> dict[str, Any]:
        """One loadgen run of ``count`` messages of pool ``kind`` through ``cfg``."""
        self.seq += 1
        times = self.rundir / "times" / f"{self.seq:04d}-{phase}-{cfg}-{kind}"
        flags = ["--pool", str(self.pools[kind]), "--message-id", "--times", str(times)]
        flags += ["--tag", f"{os.getpid()}.{self.seq}"]
        if phase == "sequential":
            flags += ["--sessions", "1", "--per-session", "0"]
        else:
            flags += ["--sessions", str(SESSIONS), "--per-session", "1"]
        watched = {"spamgate": self.procs[cfg].pid, "clamd": _pid(self.clamd), "rspamd": _pid(self.rspamd)}
        load = f"{os.getloadavg()[0]:.2f}"
        calib = round(calibration(), 1) if phase != "sequential" else None
        m0 = read_metrics(cfg)
        ns0 = tree_cpu_ns(watched["spamgate"])
        cpu0 = {k: tree_cpu(p) for k, p in watched.items()}
        res = loadgen(PORTS[cfg], count, *flags)
        cpu = {k: tree_cpu(p) - cpu0[k] for k, p in watched.items()}
        ns = tree_cpu_ns(watched["spamgate"]) - ns0
        m1 = read_metrics(cfg)
        lat, fails = read_times(times)
        rec: dict[str, Any] = {
            "kind": "content", "phase": phase, "cfg": cfg, "corpus": kind, "count": count,
            "load": load, "calib_us": calib,
            "rate": res["rate"], "wall_s": res["wall_s"], "ok": res["ok"],
            "all_ok": res["ok"] == count and not fails, "fails": sorted(set(fails))[:5],
            "cpu_ms_per_msg": round(cpu["spamgate"] * 1000 / count, 3),
            "cpu_ns_ms_per_msg": round(ns * 1000 / count, 4),
            "clamd_cpu_ms_per_msg": round(cpu["clamd"] * 1000 / count, 3),
            "rspamd_cpu_ms_per_msg": round(cpu["rspamd"] * 1000 / count, 3),
        }  # fmt: skip
        if res["ok"] + len(fails) != count:
            rec["fails"].append(f"{count - res['ok'] - len(fails)} without a reply: {res}")
        if phase == "sequential":
            rec["lat_ms"] = [round(x, 3) for x in lat]
        if cfg == "scanners":
            rec["scanner_hist"] = hist_delta(m0, m1)
        dns = {k: int(v - m0["dns"].get(k, 0)) for k, v in m1["dns"].items() if v - m0["dns"].get(k, 0)}
        if dns:
            rec["dns"] = dns
        return rec


def _pid(server: Clamd | Rspamd) -> int:
    assert server.proc is not None
    return int(server.proc.pid)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _dns(rs: list[dict[str, Any]]) -> str:
    """Resolver queries per message over ``rs`` and the share answered from the cache."""
    n = sum(r["count"] for r in rs)
    q = sum(sum(r.get("dns", {}).values()) for r in rs)
    hits = sum(r.get("dns", {}).get("cache_hit", 0) for r in rs)
    return f"{q / n:.1f} ({hits / q:.0%})" if q else "0"


def _same_round(rs: list[dict[str, Any]], kind: str, cfg: str, base: str, key: str) -> list[float]:
    """``cfg``'s ``key`` minus ``base``'s for the runs of ``kind`` in the same round (and block)."""
    out = []
    for a in rs:
        if a["corpus"] != kind or a["cfg"] != cfg:
            continue
        out += [
            a[key] - b[key]
            for b in rs
            if b["corpus"] == kind
            and b["cfg"] == base
            and (b["round"], b.get("block")) == (a["round"], a.get("block"))
        ]
    return out


def _mixed_table(mixed: list[dict[str, Any]]) -> list[str]:
    out = [
        "| config | msgs/s | spamgate CPU ms/msg (schedstat) | (ticks) | clamd CPU ms/msg "
        "| rspamd CPU ms/msg | DNS queries/msg (cache hits) | load avg by round | calibration us by round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg in CONFIGS:
        rs = [r for r in mixed if r["cfg"] == cfg]
        if not rs:
            continue
        m = {k: med([r[k] for r in rs]) for k in ("rate", "cpu_ns_ms_per_msg", "cpu_ms_per_msg")}
        scan = [med([r[f"{s}_cpu_ms_per_msg"] for r in rs]) for s in ("clamd", "rspamd")]
        out.append(
            f"| {cfg} | {m['rate']:,.1f} | {m['cpu_ns_ms_per_msg']:.3f} | {m['cpu_ms_per_msg']:.2f} | "
            f"{scan[0]:.2f} | {scan[1]:.2f} | {_dns(rs)} | {', '.join(r['load'] for r in rs)} "
            f"| {', '.join(str(r['calib_us']) for r in rs)} |"
        )
    return out


def _kind_table(kinds: list[dict[str, Any]]) -> list[str]:
    out = [
        "| kind | relay | content | scanners | content - relay (by round and block) "
        "| uribl's share (content - local) | scanners - content | msgs/s relay / content / scanners "
        "| content: DNS queries/msg (cache hits) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = "cpu_ns_ms_per_msg"
    for kind in corpus.KINDS:
        of = {cfg: [r for r in kinds if r["cfg"] == cfg and r["corpus"] == kind] for cfg in CONFIGS}
        if not all(of.values()):
            continue
        c = {cfg: med([r[key] for r in rs]) for cfg, rs in of.items()}
        rate = " / ".join(f"{med([r['rate'] for r in rs]):,.0f}" for rs in of.values())
        diff = _same_round(kinds, kind, "content", "relay", key)
        diff2 = _same_round(kinds, kind, "scanners", "content", key)
        uribl = _same_round(kinds, kind, "content", LOCAL, key)
        by_round = ", ".join(f"{x:+.3f}" for x in diff)
        out.append(
            f"| {kind} | {c['relay']:.3f} | {c['content']:.3f} | {c['scanners']:.3f} | {med(diff):+.3f} "
            f"({by_round}) | {med(uribl):+.3f} | {med(diff2):+.3f} | {rate} | {_dns(of['content'])} |"
        )
    return out


def _scanner_means(hs: list[dict[str, Any]], s: str) -> str:
    """Mean (weighted by exchanges) and median p50 of scanner ``s`` over histogram deltas."""
    n = sum(h[s]["n"] for h in hs if s in h)
    if not n:
        return "-"
    mean = sum(h[s]["mean_ms"] * h[s]["n"] for h in hs if s in h) / n
    return f"{mean:.1f} / {med([h[s]['p50_ms'] for h in hs if s in h]):.1f}"


def _seq_table(seq: list[dict[str, Any]]) -> list[str]:
    out = [
        "| kind | relay p50 / p99 | content p50 / p99 | scanners p50 / p99 | content - relay p50 "
        "| scanners - relay p50 / p99 | scanners - content p50 | clamd mean / p50 | rspamd mean / p50 | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in (*corpus.KINDS, "mixed"):
        lat = {
            cfg: [x for r in seq if r["cfg"] == cfg and kind in ("mixed", r["corpus"]) for x in r["lat_ms"]]
            for cfg in CONFIGS
        }
        if not all(lat.values()):
            continue
        hs = [r["scanner_hist"] for r in seq if r["cfg"] == "scanners" and r["corpus"] == kind]
        sc = {s: _scanner_means(hs, s) for s in SCANNERS}
        p = {cfg: (statistics.median(v), pct(v, 0.99)) for cfg, v in lat.items()}
        rel, con, sca = p["relay"], p["content"], p["scanners"]
        out.append(
            f"| {kind} | {rel[0]:.2f} / {rel[1]:.2f} | {con[0]:.2f} / {con[1]:.2f} "
            f"| {sca[0]:.2f} / {sca[1]:.2f} | {con[0] - rel[0]:+.2f} "
            f"| {sca[0] - rel[0]:+.2f} / {sca[1] - rel[1]:+.2f} | {sca[0] - con[0]:+.2f} "
            f"| {sc['clamav']} | {sc['rspamd']} | {len(lat['relay'])} |"
        )
    out += [
        "",
        "Scanners' own time (spamgate_scanner_seconds, mean ms per exchange) in each sequential run, "
        "against the latency the scanners added (scanners - content, medians of the same round):",
    ]
    for r in seq:
        if r["cfg"] != "scanners" or not r.get("scanner_hist"):
            continue
        ref = [
            x
            for x in seq
            if x["cfg"] == "content" and x["corpus"] == r["corpus"] and x["round"] == r["round"]
        ]
        added = statistics.median(r["lat_ms"]) - statistics.median(ref[0]["lat_ms"]) if ref else float("nan")
        m = {s: r["scanner_hist"].get(s, {}).get("mean_ms", float("nan")) for s in SCANNERS}
        out.append(
            f"- round {r['round']} {r['corpus']}: clamav {m['clamav']:.1f}, rspamd {m['rspamd']:.1f} "
            f"(sum {m['clamav'] + m['rspamd']:.1f}, max {max(m.values()):.1f}); "
            f"added {added:+.1f} (load {r['load']})"
        )
    return out


def summarize(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [f"# content inspection workload {meta['started']}", "", f"`{meta['command']}`", ""]
    out += [f"machine: {meta['machine']}", "", f"corpus: {meta['corpus']}", ""]
    fails = [r for r in runs if not r["all_ok"]]
    out += [
        f"**failures (non-250): {len(fails)} runs**" if fails else "every message got 250 in every run",
        "",
    ]
    for r in fails:
        out.append(
            f"- round {r['round']} {r['phase']} {r['cfg']} {r['corpus']}: {r['ok']}/{r['count']} {r['fails']}"
        )
    parts = (
        ("mixed", "Mixed corpus, 20 concurrent sessions (medians over rounds)", _mixed_table),
        (
            "by_kind",
            "Each kind alone, 20 concurrent sessions: spamgate CPU ms per message (schedstat)",
            _kind_table,
        ),
        ("sequential", "Sequential (one session): latency per message, ms (rounds pooled)", _seq_table),
    )
    for phase, title, table in parts:
        rs = [r for r in runs if r["phase"] == phase]
        if rs:
            out += ["", f"## {title}", "", *table(rs)]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="counts / 4")
    ap.add_argument("--corpus", type=int, default=200, help="distinct messages generated (bench/corpus.py)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--phases", default="mixed,by_kind,sequential")
    ap.add_argument("--summarize", metavar="DIR", help="print the summary of a finished run")
    args = ap.parse_args()
    if args.summarize:
        runs, meta = read_run(Path(args.summarize))
        print(summarize(runs, meta))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    busy = [p for p in [*PORTS.values(), *ADMIN.values()] if p >= 20620 and not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy} (a previous run still going?)")
    div = 4 if args.quick else 1
    phases = args.phases.split(",")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / f"{stamp}-content"
    rundir.mkdir(parents=True)
    meta: dict[str, Any] = {"started": stamp, "command": " ".join(sys.argv), "machine": machine()}
    procs: dict[str, Proc] = {}
    runs: list[dict[str, Any]] = []
    dns = start_dns()
    dns.add(f"test.{URIBL}", "A", "127.0.0.2")  # the list's health probe: listed
    clamd = Clamd(rundir / "clamd", stream_max=25 * 2**20)
    zdir = public_dir()  # rbldnsd runs as its own user: a world-readable zone
    (zdir / "dummy.zone").write_text("127.0.0.2\n")
    (zdir / "dummy.zone").chmod(0o644)
    rbl = Rbldnsd(zdir / "rbldnsd", {"dummy.bench.test": zdir / "dummy.zone"})
    (zdir / "rbldnsd").chmod(0o755)
    rspamd = BenchRspamd(rundir / "rspamd", dns_port=rbl.port)
    try:
        msgs = corpus.build(args.corpus, args.seed, date=time.time())
        clamd.start()
        rbl.start()
        rspamd.start()
        start_sink(rundir, 0, procs)
        for name in (*CONFIGS, LOCAL):
            start_spamgate(rundir, name, procs, spamgate_env(name, dns, clamd, rspamd))
        for name in (*CONFIGS, LOCAL):
            wait_banner(PORTS[name])
        bench = Bench(rundir, procs, clamd, rspamd)
        meta["corpus"] = bench.write_pools(msgs)
        write_meta(rundir, meta)
        with Recorder(rundir, runs) as rec:
            for cfg in (*CONFIGS, LOCAL):  # warm-up: every message once (resolver cache, pools, scanners)
                w = bench.run("warmup", cfg, "mixed", len(msgs))
                if not w["all_ok"]:
                    rec.record(w, -1)
            for rnd in range(args.rounds):
                order = CONFIGS[rnd % 3 :] + CONFIGS[: rnd % 3]
                if "mixed" in phases:
                    for cfg in order:
                        rec.record(bench.run("mixed", cfg, "mixed", MIXED // div), rnd)
                if "by_kind" in phases:  # A/B blocks: a drift in the machine's speed hits both
                    for kind, n in BY_KIND.items():
                        for blk in range(BLOCKS):
                            for cfg in (*order[blk % 3 :], *order[: blk % 3], LOCAL):
                                r = bench.run("by_kind", cfg, kind, max(5, n // BLOCKS // div))
                                rec.record({**r, "block": blk}, rnd)
                if "sequential" in phases:
                    for kind, n in SEQUENTIAL.items():
                        for cfg in order:
                            rec.record(bench.run("sequential", cfg, kind, max(4, n // div)), rnd)
    finally:
        for p in procs.values():
            p.stop()
        clamd.stop()
        rspamd.stop()
        rbl.stop()
        shutil.rmtree(zdir, ignore_errors=True)
        dns.close()
    summary = summarize(runs, meta)
    (rundir / "summary.md").write_text(summary)
    print(summary)
    print(f"results: {rundir}")
    return 0 if all(r["all_ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
