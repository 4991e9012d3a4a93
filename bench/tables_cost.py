"""Memory and lookup cost of the [tables] at ISP size: 100,000 domains, 1,000,000 recipients.

    .venv/bin/python bench/tables_cost.py [--domains 100000] [--recipients 1000000]

Writes the files to a temporary directory, loads them the way a worker does
(proxy.state.tables), and prints: load time, resident memory added (VmRSS before/after,
the strings read from the file freed), the table's own bytes, and the cost of one lookup
(hits and misses; the same lookups a RCPT does). For comparison, a plain ``set`` of ``str``.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

from proxy.state.tables import load_domains, load_recipients


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def per_lookup_us(fn: object, keys: list[str]) -> float:
    contains = fn.__contains__  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for k in keys:
        contains(k)
    return (time.perf_counter() - t0) / len(keys) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    args = ap.parse_args()
    rnd = random.Random(13)
    with tempfile.TemporaryDirectory() as tmp:
        dpath, rpath = Path(tmp) / "domains", Path(tmp) / "recipients"
        domains = [f"d{i}-{rnd.randrange(10**6)}.example" for i in range(args.domains)]
        dpath.write_text("\n".join(domains) + "\n")
        with rpath.open("w") as f:
            for i in range(args.recipients):
                f.write(f"user{i}@{domains[i % len(domains)]}\n")
        hits_d = rnd.sample(domains, 100_000)
        miss_d = [f"x{i}.nowhere.example" for i in range(100_000)]
        hits_r = [f"user{i}@{domains[i % len(domains)]}" for i in rnd.sample(range(args.recipients), 100_000)]
        miss_r = [f"nobody{i}@{domains[i % len(domains)]}" for i in range(100_000)]
        del domains
        gc.collect()

        before = rss_mib()
        t0 = time.perf_counter()
        dom = load_domains([str(dpath)])
        t_dom = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = load_recipients([str(rpath)])
        t_rec = time.perf_counter() - t0
        gc.collect()
        after = rss_mib()
        print(f"domains:    {len(dom):>9,} loaded in {t_dom:5.2f}s, table {dom.nbytes / 2**20:6.1f} MiB")
        mib = rec.users.nbytes / 2**20
        print(f"recipients: {len(rec.users):>9,} loaded in {t_rec:5.2f}s, table {mib:6.1f} MiB")
        print(f"resident memory added by both: {after - before:6.1f} MiB")
        hit, miss = per_lookup_us(dom, hits_d), per_lookup_us(dom, miss_d)
        print(f"lookup domain    hit {hit:.2f} us  miss {miss:.2f} us")
        print(
            f"lookup recipient hit {per_lookup_us(_Known(rec), hits_r):.2f} us"
            f"  miss {per_lookup_us(_Known(rec), miss_r):.2f} us  (lowercase, domain, address)"
        )
        before = rss_mib()
        plain = set(rpath.read_text().split())
        gc.collect()
        print(f"for comparison, set of str of the recipients: {rss_mib() - before:6.1f} MiB")
        del plain


class _Known:
    def __init__(self, rec: object) -> None:
        self.rec = rec

    def __contains__(self, address: str) -> bool:
        return bool(self.rec.known(address))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
