"""Measurement: CPU and RSS of a process tree (from /proc), latency percentiles, the machine.

Proxy CPU is utime+stime (reaped children included) of the proxy's whole process tree: spamgate's
supervisor and its workers, HAProxy, or the sink for the ``direct`` peer.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user+system, reaped children included) of a process tree."""
    total = 0
    for pid in tree_pids(root):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / HZ


def tree_cpu_ns(root: int) -> float:
    """CPU seconds of the live threads of a process tree from /proc/<pid>/task/<tid>/schedstat
    (nanoseconds on a CPU): precise where ``tree_cpu`` counts clock ticks (10 ms per process
    and reading), but blind to threads and processes that have exited. For differences over a
    run of long-lived processes (spamgate's workers and their thread pools)."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total / 1e9


def tree_rss_kb(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def tree_rss_median_kb(root: int, samples: int = 3, interval: float = 0.3) -> int:
    """Median of ``samples`` RSS readings of a process tree, ``interval`` seconds apart."""
    values = []
    for _ in range(samples):
        values.append(tree_rss_kb(root))
        time.sleep(interval)
    return int(statistics.median(values))


def percentiles_ms(times: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of durations in seconds."""
    times = sorted(times)
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99)] * 1000}


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU {cpu}, {mem:.1f} GiB, {os.uname().release}, load {os.getloadavg()[0]:.2f}"
