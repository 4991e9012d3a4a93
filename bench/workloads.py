"""The workloads W1-W6 and the latency run: what each sends, to which peers, and the record it
produces (one JSON object per run, ``kind`` load | latency | flood | idle).

    W1-W3  smtp-source flags and counts in ``WORKLOADS``; every peer (spamgate_metrics only for
           ``METRICS_WORKLOADS``)
    W4     connection-stage rejection flood from ``FLOOD_NET`` (blocklisted in
           bench/spamgate-bench.toml), spamgate only
    W5     w1_single through spamgate_dns (every check on, see procs.dns_env)
    W6     idle connections, RSS per connection, ``IDLE_PEERS``
    latency  sequential client, one session, ``LATENCY_PEERS``

To add a workload: its definition and its record function here, a call in run.py's round loop,
and (for a new ``kind``) a table in report.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from load import connect_flood, hold_idle, sequential_transactions, smtp_source
from measure import percentiles_ms, tree_cpu, tree_rss_median_kb
from procs import HAPROXY_MAXCONN, PORTS, Proc, peer_owner, peer_port

# name: (smtp-source flags, COUNT for direct/haproxy, COUNT for spamgate)
WORKLOADS: dict[str, tuple[list[str], int, int]] = {
    "w1_single": (["-s", "50", "-l", "4096"], 30000, 8000),
    "w1_multi": (["-s", "50", "-l", "4096", "-d"], 60000, 15000),
    "w2_churn": (["-s", "50"], 30000, 8000),
    "w3_large": (["-s", "10", "-l", "1048576", "-d"], 1500, 400),
}
METRICS_WORKLOADS = ("w1_single", "w1_multi")  # spamgate with the admin listener and metrics on
W5_WORKLOAD = "w1_single"  # what spamgate_dns runs; W5 is compared with it in the same round
LOAD_PEERS = ("direct", "haproxy", "spamgate", "spamgate_metrics", "spamgate_dns")
WARMUP_PEERS = ("haproxy", "spamgate", "spamgate_metrics", "spamgate_dns")
LATENCY_PEERS = ("direct", "haproxy", "spamgate", "spamgate_metrics")
IDLE_PEERS = ("haproxy", "spamgate")
FLOOD_NET = "127.0.99"  # blocklisted in bench/spamgate-bench.toml
FLOOD_CONCURRENCY = 50
QUICK_DIVISOR = 5  # --quick: counts / 5


def load_peers(workload: str, want: Callable[[str], bool]) -> list[str]:
    """The peers that run ``workload`` (a key of ``WORKLOADS``) in a round."""
    peers = []
    for peer in LOAD_PEERS:
        if peer == "spamgate_metrics" and workload not in METRICS_WORKLOADS:
            continue
        if peer == "spamgate_dns" and (workload != W5_WORKLOAD or not want("w5")):
            continue
        peers.append(peer)
    return peers


def warm_up() -> None:
    """The pools and caches of every peer."""
    for peer in WARMUP_PEERS:
        smtp_source(PORTS[peer], ["-s", "20"], 500)


def run_load(procs: dict[str, Proc], peer: str, workload: str, quick: bool) -> dict[str, Any]:
    """W1-W3 (and W5 on spamgate_dns): smtp-source through ``peer``; rate and CPU per message."""
    flags, fast, slow = WORKLOADS[workload]
    count = fast if peer in ("direct", "haproxy") else slow
    if quick:
        count //= QUICK_DIVISOR
    port = peer_port(peer)
    owner = peer_owner(procs, peer)
    cpu0 = tree_cpu(owner.pid)
    wall, code = smtp_source(port, flags, count)
    cpu = tree_cpu(owner.pid) - cpu0
    return {
        "kind": "load", "workload": workload, "peer": peer, "count": count, "wall_s": round(wall, 3),
        "rate": round(count / wall, 1), "ok": code == 0,
        # per message; for w3 (1 MiB messages) this is per MiB. For direct: the sink's CPU.
        "cpu_ms_per_msg": round(cpu * 1000 / count, 4),
    }  # fmt: skip


def latency(peer: str, n: int) -> dict[str, Any]:
    """Per-message latency (MAIL .. final 250 after DATA) through ``peer``, sequential client."""
    return {"kind": "latency", "peer": peer, **percentiles_ms(sequential_transactions(peer_port(peer), n))}


def flood(procs: dict[str, Proc], count: int) -> dict[str, Any]:
    """W4: connections from a blocklisted network, refused at connect (554), then QUIT."""
    cpu0 = tree_cpu(procs["spamgate"].pid)
    wall, refused = asyncio.run(connect_flood(PORTS["spamgate"], count, FLOOD_CONCURRENCY, FLOOD_NET))
    cpu = tree_cpu(procs["spamgate"].pid) - cpu0
    return {
        "kind": "flood", "workload": "w4_flood", "peer": "spamgate", "count": count,
        "rate": round(count / wall, 1), "refused": refused, "ok": refused == count,
        "cpu_ms_per_conn": round(cpu * 1000 / count, 4),
    }  # fmt: skip


def idle_conns_for(peer: str, idle_conns: int) -> int:
    """W6's connection count for ``peer`` (HAProxy stops at its maxconn)."""
    return min(idle_conns, HAPROXY_MAXCONN) if peer == "haproxy" else idle_conns


def idle(procs: dict[str, Proc], peer: str, n: int) -> dict[str, Any]:
    """W6: n idle connections (banner + EHLO, then silence); RSS growth of the peer per connection."""
    pid = procs[peer].pid

    def measure() -> int:
        return tree_rss_median_kb(pid)

    asyncio.run(hold_idle(PORTS[peer], 100, 0.5, lambda: 0))  # warm-up
    time.sleep(1)
    before = measure()
    after, opened = asyncio.run(hold_idle(PORTS[peer], n, 2.0, measure))
    time.sleep(2)
    return {
        "kind": "idle", "workload": "w6_idle", "peer": peer, "conns": opened,
        "rss_before_kb": before, "rss_after_kb": after,
        "kb_per_conn": round((after - before) / opened, 2),
    }  # fmt: skip
