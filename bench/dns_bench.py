"""Resolver throughput: spamgate's Resolver (aiodns/c-ares) against dnspython's asyncresolver.

A small asyncio UDP DNS server (dnslib, answers cached by question bytes) runs in a separate
process and serves one A record per name. Each client resolves N distinct names (no cache
hits) at a given concurrency on uvloop; we report queries/s and client CPU per query.

    .venv/bin/python bench/dns_bench.py [--names 5000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from dnslib import QTYPE, RR, A, DNSRecord

    cache: dict[bytes, bytes] = {}

    class Proto(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            key = data[2:]
            out = cache.get(key)
            if out is None:
                req = DNSRecord.parse(data)
                rep = req.reply()
                if req.q.qtype == QTYPE.A:
                    rep.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=300))
                out = rep.pack()
                cache[key] = out[2:]
                self.t.sendto(out, addr)  # type: ignore[attr-defined]
                return
            self.t.sendto(data[:2] + out, addr)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", port))
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def run_spamgate(port: int, names: list[str], conc: int) -> tuple[float, float, int]:
    from proxy.dns.config import DnsConfig
    from proxy.dns.resolver import Resolver

    r = Resolver(DnsConfig(nameservers=[f"127.0.0.1:{port}"], timeout=2.0, retries=1))
    sem = asyncio.Semaphore(conc)
    errors = 0

    async def one(n: str) -> None:
        nonlocal errors
        async with sem:
            res = await r.lookup(n, "A")
            errors += not res.ok

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in names))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await r.close()
    return wall, cpu, errors


async def run_dnspython(port: int, names: list[str], conc: int) -> tuple[float, float, int]:
    import dns.asyncresolver

    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = port
    r.timeout, r.lifetime = 2.0, 4.0
    sem = asyncio.Semaphore(conc)
    errors = 0

    async def one(n: str) -> None:
        nonlocal errors
        async with sem:
            try:
                await r.resolve(n, "A", search=False)
            except Exception:
                errors += 1

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in names))
    return time.perf_counter() - t0, time.process_time() - c0, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = multiprocessing.Event()
    srv = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    srv.start()
    ready.wait(10)
    import uvloop

    try:
        for label, fn in (
            ("spamgate Resolver (aiodns)", run_spamgate),
            ("dnspython asyncresolver", run_dnspython),
        ):
            names = [f"n{i}.{label.split()[0]}.bench.test" for i in range(args.names)]
            wall, cpu, errors = uvloop.run(fn(port, names, args.concurrency))
            print(
                f"{label:28s} {args.names / wall:8.0f} q/s  {cpu / args.names * 1e6:6.0f} us CPU/query"
                f"  errors={errors}  (conc={args.concurrency})"
            )
    finally:
        srv.terminate()
        srv.join()


if __name__ == "__main__":
    main()
