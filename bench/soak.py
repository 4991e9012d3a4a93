#!/usr/bin/env python3
"""The soak (``make soak``; not part of ``make test``): spamgate with every check on, under
steady load with faults downstream and in DNS, watched every ``--interval`` seconds.

    loadgen.py (W5-real pool, paced) ──► spamgate (honest config + every check) ──► faultsink.py
                                              │
                                              └── DNS: realmail.py's zone, some queries unanswered

- spamgate: bench/spamgate-honest.toml with every DNS and authentication check on (as
  bench/honest.py's spamgate_real), SQLite store in the run directory, admin listener on;
- load: W5-real's signed mail from 200 clients, one message per session, paced at ``--rate``
  messages/s; by default half of the rate this same set-up sustains in a calibration burst at
  the start (the burst runs against the same faults);
- faults: the sink tempfails 1 % of RCPTs and 1 % of messages, drops 0.5 % of connections
  after the message (no reply), and delays 2 % of its replies by up to 2 s; the DNS server
  leaves 2 % of queries unanswered (spamgate's resolver times out after 1 s).

Every interval: RSS and open descriptors of spamgate's process tree, the event-loop lag (mean
over the interval, from spamgate_event_loop_lag_seconds on /metrics), the store's size on disk
(SQLite file + WAL), messages acknowledged so far, the load average. The run fails when, after
``--warmup`` minutes (:func:`verdict`, rules in ``CRITERIA``):

- RSS grows more than 5 % (median of the last 3 samples against the first 3);
- descriptors grow (median of the last 3 more than 10 over the first 3 samples' maximum);
- the store keeps growing: the median of the last 3 samples is more than 10 % + 4 MiB above
  the largest size seen in the first half of the time after the warm-up (judged when that
  half is at least one ``store.purge_interval`` long; see bench/README.md for why);
- any message a client got 250 for is missing at the sink, or any session hangs (no end
  within ``--session-timeout``), or the sink refused any command as out of sequence (a nested
  MAIL, RCPT or DATA outside a transaction: spamgate reused a downstream session out of step).

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup 5] [--rate R]

Output: bench/results/<stamp>-soak/{samples.jsonl,result.json,soak.png,*.log}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import realmail
from faultsink import read_delivered, read_stats, reconcile
from honest import ADMIN, HONEST_CONFIG, honest_env
from loadgen import loadgen, read_acked
from measure import machine, tree_pids, tree_rss_kb
from procs import PORTS, ROOT, Proc, check_ports_free, start_spamgate, wait_banner

NAME = "spamgate_real"
HERE = Path(__file__).resolve().parent
FAULTS = ["--tempfail-rcpt", "0.01", "--tempfail-dot", "0.01", "--drop-dot", "0.005", "--slow", "0.02"]
RSS_LIMIT = 0.05
FD_SLACK = 10
STORE_LIMIT = 0.10
STORE_SLACK = 4 * 2**20  # one WAL autocheckpoint (1000 pages of 4 KiB): a held-back checkpoint
PURGE_INTERVAL_S = 300.0  # store.purge_interval of spamgate-honest.toml (the default, 5m)
CRITERIA = (
    f"RSS: median of the last 3 samples at most {RSS_LIMIT:.0%} above the median of the first 3 "
    "after the warm-up",
    f"descriptors: median of the last 3 samples at most {FD_SLACK} above the maximum of the first 3",
    f"store (SQLite file + WAL): median of the last 3 samples at most {STORE_LIMIT:.0%} + "
    f"{STORE_SLACK // 2**20} MiB above the maximum of the first half after the warm-up (which "
    "must span one store.purge_interval, else not judged)",
    "no message acknowledged to the client (250 after DATA) missing at the sink",
    "no session hung",
    "no command out of sequence at the sink (a downstream session reused out of step: 503)",
)


def flaky_dns() -> Any:
    """The test DNS server; it leaves ``drop_rate`` of the queries unanswered (client timeouts)."""
    sys.path.insert(0, str(ROOT))
    from tests.harness.dns_server import DnsTestServer

    class Flaky(DnsTestServer):
        drop_rate = 0.0
        rng = random.Random(15)

        def answer(self, data: bytes, limit: int | None) -> bytes | None:
            return None if self.rng.random() < self.drop_rate else super().answer(data, limit)

    return Flaky().start()


def tree_fds(root: int) -> int:
    n = 0
    for pid in tree_pids(root):
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return n


def loop_lag() -> tuple[float, float]:
    """(sum, count) of spamgate_event_loop_lag_seconds over the workers."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[NAME]}/metrics", timeout=10).read().decode()
    vals = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for k in vals:
            if line.startswith(f"spamgate_event_loop_lag_seconds_{k}"):
                vals[k] += float(line.rsplit(" ", 1)[1])
    return vals["sum"], vals["count"]


def store_bytes(rundir: Path) -> int:
    return sum(p.stat().st_size for p in rundir.glob(f"{NAME}.db*"))


def verdict(
    samples: list[dict[str, Any]],
    warmup_s: float,
    lost: int,
    hung: int,
    purge_interval_s: float = PURGE_INTERVAL_S,
    sequence_errors: int = 0,
) -> dict[str, Any]:
    """PASS/FAIL of a soak: ``failures`` is empty when it passed; ``criteria`` says what was checked."""
    after = [s for s in samples if s["t"] >= warmup_s]
    res: dict[str, Any] = {"lost": lost, "hung": hung, "failures": [], "criteria": list(CRITERIA)}
    if len(after) < 6:
        res["failures"].append(f"only {len(after)} samples after the warm-up (need 6)")
        return res
    first, last = after[:3], after[-3:]
    rss0, rss1 = statistics.median(s["rss_kb"] for s in first), statistics.median(s["rss_kb"] for s in last)
    fd_max0, fd1 = max(s["fds"] for s in first), statistics.median(s["fds"] for s in last)
    res.update(rss_start_kb=rss0, rss_end_kb=rss1, rss_growth=round(rss1 / rss0 - 1, 4))
    res.update(fds_start_max=fd_max0, fds_end=fd1)
    if rss1 > rss0 * (1 + RSS_LIMIT):
        res["failures"].append(f"RSS grew {rss1 / rss0 - 1:.1%} after the warm-up (limit {RSS_LIMIT:.0%})")
    if fd1 > fd_max0 + FD_SLACK:
        res["failures"].append(f"descriptors grew: {fd_max0} -> {fd1}")
    store_check(after, purge_interval_s, res)
    if lost:
        res["failures"].append(f"{lost} acknowledged messages missing at the sink")
    if hung:
        res["failures"].append(f"{hung} sessions hung")
    if sequence_errors:
        res["failures"].append(f"{sequence_errors} commands out of sequence at the sink (503)")
    return res


def store_check(after: list[dict[str, Any]], purge_interval_s: float, res: dict[str, Any]) -> None:
    """The store must not keep growing after the warm-up. Its files are high-water marks (purged
    pages are reused, not returned; the WAL restarts from its beginning after a checkpoint),
    and the maximum over a window of at least one purge interval holds a whole cycle of fill,
    purge and WAL reuse: the end may not rise above that peak by more than the limit."""
    t0, t1 = after[0]["t"], after[-1]["t"]
    half = (t1 - t0) / 2
    if half < purge_interval_s:
        res["store_judged"] = False
        res["store_note"] = (
            f"store not judged: the first half after the warm-up is {half / 60:.1f} min, shorter than "
            f"one store.purge_interval ({purge_interval_s / 60:g} min)"
        )
        return
    ref = max(s["store_bytes"] for s in after if s["t"] <= t0 + half)
    end = statistics.median(s["store_bytes"] for s in after[-3:])
    limit = ref * (1 + STORE_LIMIT) + STORE_SLACK
    res.update(
        store_judged=True, store_ref_max_bytes=ref, store_end_bytes=end, store_limit_bytes=round(limit)
    )
    res["store_growth"] = round(end / ref - 1, 4) if ref else None
    if end > limit:
        res["failures"].append(
            f"store kept growing after the warm-up: {end / 2**20:.1f} MiB at the end, the first half's "
            f"maximum {ref / 2**20:.1f} MiB (limit {limit / 2**20:.1f} MiB)"
        )


def plot(samples: list[dict[str, Any]], warmup_s: float, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    series = [
        ("RSS MB", [s["rss_kb"] / 1024 for s in samples]),
        ("open descriptors", [s["fds"] for s in samples]),
        ("event-loop lag ms (mean)", [s["lag_ms"] for s in samples]),
        ("store MB (SQLite + WAL)", [s["store_bytes"] / 2**20 for s in samples]),
        ("acked msgs/s", [s["acked_rate"] for s in samples]),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 10), sharex=True)
    for ax, (label, ys) in zip(axes, series, strict=True):
        ax.plot(t, ys, marker=".")
        ax.set_ylabel(label, fontsize=8)
        ax.axvline(warmup_s / 60, color="grey", linestyle="--")
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def sample(procs: dict[str, Proc], rundir: Path, t0: float, prev: dict[str, Any]) -> dict[str, Any]:
    pid = procs[NAME].pid
    lag_sum, lag_n = loop_lag()
    acked = sum(p.read_text().count("\n") for p in rundir.glob("acked.*"))
    now = time.monotonic()
    dn = lag_n - prev.get("lag_n", 0)
    s = {
        "t": round(now - t0, 1), "rss_kb": tree_rss_kb(pid), "fds": tree_fds(pid),
        "lag_ms": round((lag_sum - prev.get("lag_sum", 0)) * 1000 / dn, 3) if dn else 0.0,
        "store_bytes": store_bytes(rundir), "acked": acked,
        "acked_rate": round((acked - prev.get("acked", 0)) / max(now - prev.get("mono", t0), 1e-3), 1),
        "load": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    prev.update(lag_sum=lag_sum, lag_n=lag_n, acked=acked, mono=now)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="minutes before the growth checks start")
    ap.add_argument("--rate", type=float, default=0.0, help="messages/s (0: half the calibrated rate)")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--dns-drop", type=float, default=0.02)
    ap.add_argument("--session-timeout", type=float, default=120.0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rundir = ROOT / "bench" / "results" / f"{stamp}-soak"
    rundir.mkdir(parents=True)
    procs: dict[str, Proc] = {}
    meta: dict[str, Any] = {"started": stamp, "command": " ".join(sys.argv), "machine": machine()}
    samples: list[dict[str, Any]] = []
    dns = flaky_dns()
    gen: subprocess.Popen[bytes] | None = None
    try:
        check_ports_free()
        pool = rundir / "pool.pkl"
        meta["realmail"] = realmail.build(dns, pool)
        sink_cmd = [sys.executable, str(HERE / "faultsink.py"), "--port", str(PORTS["sink"])]
        sink_cmd += ["--delivered", str(rundir / "delivered"), *FAULTS]
        procs["sink"] = Proc("sink", sink_cmd, rundir / "sink.log")
        wait_banner(PORTS["sink"])
        start_spamgate(rundir, NAME, procs, honest_env(NAME, dns), HONEST_CONFIG)
        wait_banner(PORTS[NAME])
        flags = ["--sessions", str(args.sessions), "--per-session", "1", "--pool", str(pool)]
        flags += ["--session-timeout", str(args.session_timeout)]
        loadgen(PORTS[NAME], 1000, *flags)  # warm the pool and the caches
        dns.drop_rate = args.dns_drop
        calib = loadgen(PORTS[NAME], 3000, *flags)
        rate = args.rate or round(calib["rate"] / 2, 1)
        meta.update(calibration=calib, rate=rate, faults=FAULTS, dns_drop=args.dns_drop)
        (rundir / "meta.json").write_text(json.dumps(meta, indent=2))
        print(f"calibration {calib['rate']} msgs/s; soak at {rate} msgs/s for {args.minutes} min", flush=True)
        count = int(rate * args.minutes * 60)
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--port", str(PORTS[NAME]), "--count", str(count)]
        cmd += [*flags, "--rate", str(rate), "--acked", str(rundir / "acked"), "--tag", "soak"]
        prev: dict[str, Any] = {}
        t0 = time.monotonic()
        sample(procs, rundir, t0, prev)
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        with open(rundir / "samples.jsonl", "w") as out:
            while gen.poll() is None:
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0) % args.interval))
                s = sample(procs, rundir, t0, prev)
                samples.append(s)
                out.write(json.dumps(s) + "\n")
                out.flush()
                print(json.dumps(s), flush=True)
        result = json.loads(gen.communicate()[0])
        time.sleep(5)
        idle = {"rss_kb": tree_rss_kb(procs[NAME].pid), "fds": tree_fds(procs[NAME].pid)}
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        for p in procs.values():
            p.stop()
        dns.close()
    acked = read_acked(list(rundir.glob("acked.*")))
    stored, dup = read_delivered([rundir / "delivered"])
    delivered = {k: v for k, v in stored.items() if k.startswith("soak.")}
    rec = reconcile(acked, delivered)
    sink_stats = read_stats(rundir / "sink.log")
    res = verdict(
        samples, args.warmup * 60, len(rec["lost"]), result["hung"],
        sequence_errors=sink_stats.get("sequence_errors", 0),
    )  # fmt: skip
    res["sink"] = sink_stats
    res.update(load=result, rate=rate, idle_after=idle, acked=len(acked), delivered=len(delivered))
    # delivered downstream but not acknowledged to the client (the client would send it again)
    res["delivered_not_acked"] = len(rec["stored_noreply"]) + len(rec["replied_not_acked"])
    res["stored_twice_at_sink"] = dup
    res["lost_ids"] = rec["lost"][:20]
    (rundir / "result.json").write_text(json.dumps(res, indent=2))
    title = f"soak {stamp}: {args.minutes:g} min at {rate:g} msgs/s, faults downstream + DNS"
    plot(samples, args.warmup * 60, rundir / "soak.png", title)
    print(json.dumps(res, indent=2))
    print(f"results: {rundir}")
    print("criteria:\n  " + "\n  ".join(res["criteria"]))
    if "store_note" in res:
        print(res["store_note"])
    print("PASS" if not res["failures"] else "FAIL: " + "; ".join(res["failures"]))
    return 0 if not res["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
