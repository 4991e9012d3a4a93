"""Reporting: the run directory (meta.json, runs.jsonl, summary.md) and the summary tables.

Figures are medians over rounds; ratios are taken to HAProxy's figure of the same round (W5: to
W1-single through spamgate of the same round; latency: added to direct of the same round).
bench/RESULTS.md is written by hand from a summary.md of a run on a quiet machine.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import TracebackType
from typing import Any

from workloads import WORKLOADS

SUMMARY_PEERS = ["direct", "haproxy", "spamgate", "spamgate_metrics"]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Recorder:
    """Appends each record to ``runs`` and to runs.jsonl, and prints it (one JSON line each)."""

    def __init__(self, rundir: Path, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.jl = open(rundir / "runs.jsonl", "w")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.jl.close()

    def record(self, r: dict[str, Any], rnd: int) -> None:
        r["round"] = rnd
        self.runs.append(r)
        self.jl.write(json.dumps(r) + "\n")
        self.jl.flush()
        print(json.dumps(r), flush=True)


def write_meta(rundir: Path, meta: dict[str, Any]) -> None:
    (rundir / "meta.json").write_text(json.dumps(meta, indent=2))


def read_run(d: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records and meta of a finished run directory (``--summarize``)."""
    runs = [json.loads(x) for x in (d / "runs.jsonl").read_text().splitlines() if x]
    meta = json.loads((d / "meta.json").read_text())
    more = d / "more.jsonl"  # e.g. a separate --only w6 run appended
    if more.exists():
        runs += [json.loads(x) for x in more.read_text().splitlines() if x]
    return runs, meta


def _load_table(loads: list[dict[str, Any]]) -> list[str]:
    out = [
        "| workload | peer | msgs/s (median) | ratio to haproxy (same round) | proxy CPU ms/msg | all ok |"
    ]
    out += ["|---|---|---|---|---|---|"]
    for wl in WORKLOADS:
        for peer in SUMMARY_PEERS:
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
    return out


def _latency_table(lat: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "| latency peer | p50 ms | p99 ms | added p50 ms vs direct | added p99 ms |",
        "|---|---|---|---|---|",
    ]
    for peer in SUMMARY_PEERS:
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
    return out


def _flood_table(fl: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "| W4 rejection flood | conn/s (median) | spamgate CPU ms/conn | all refused |",
        "|---|---|---|---|",
    ]
    rate, cpu = med([r["rate"] for r in fl]), med([r["cpu_ms_per_conn"] for r in fl])
    out.append(f"| spamgate | {rate:,.0f} | {cpu:.3f} | {all(r['ok'] for r in fl)} |")
    return out


def _idle_table(idl: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "| W6 idle peer | connections | RSS before MB | RSS after MB | KB per connection |",
        "|---|---|---|---|---|",
    ]
    for r in idl:
        before, after = r["rss_before_kb"] / 1024, r["rss_after_kb"] / 1024
        out.append(f"| {r['peer']} | {r['conns']} | {before:.1f} | {after:.1f} | {r['kb_per_conn']:.2f} |")
    return out


def _w5_table(loads: list[dict[str, Any]], w5: list[dict[str, Any]]) -> list[str]:
    ratios = []
    for r in w5:
        w1 = [x for x in loads if x["workload"] == r["workload"] and x["peer"] == "spamgate"]
        w1 = [x for x in w1 if x["round"] == r["round"]]
        if w1:
            ratios.append(r["rate"] / w1[0]["rate"])
    rate, cpu = med([r["rate"] for r in w5]), med([r["cpu_ms_per_msg"] for r in w5])
    return [
        "",
        "| W5: w1_single, all checks on | msgs/s | ratio to W1 spamgate (same round) | CPU ms/msg | all ok |",
        "|---|---|---|---|---|",
        f"| spamgate_dns | {rate:,.0f} | {med(ratios):.3f} | {cpu:.3f} | {all(r['ok'] for r in w5)} |",
    ]


def summarize(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [f"# spamgate bench {meta['started']}", "", f"`{meta['command']}`", ""]
    out += [f"machine: {meta['machine']}", f"rounds: {meta['rounds']}", ""]
    loads = [r for r in runs if r["kind"] == "load"]
    out += _load_table(loads)
    lat = [r for r in runs if r["kind"] == "latency"]
    if lat:
        out += _latency_table(lat)
    fl = [r for r in runs if r["kind"] == "flood"]
    if fl:
        out += _flood_table(fl)
    idl = [r for r in runs if r["kind"] == "idle"]
    if idl:
        out += _idle_table(idl)
    w5 = [r for r in loads if r["peer"] == "spamgate_dns"]
    if w5:
        out += _w5_table(loads, w5)
    return "\n".join(out) + "\n"
