#!/usr/bin/env python3
"""spamgate's own CPU per message for the content checks: parse + links + attachments.

Two generated messages, each checked N times the way the DATA stage does (a fresh transaction
each time, so the shared analysis is recomputed): the ``mime``, ``attachments`` and
``phishing`` checks run for real, and ``uribl`` computes its lookup targets (Public Suffix List
reduction, dedup, cap); its DNS queries are I/O, not counted here.

- ``html20k``: a 20 KB multipart/alternative message (text and HTML) with 60 links;
- ``zip``: a short text part and a small zip attachment (3 members, one nested zip).

Prints process CPU (``time.process_time``) per message in milliseconds: the minimum and the
median of 5 rounds of N messages (the minimum is the least disturbed by other load).

    .venv/bin/python bench/content_cost.py [N]
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import sys
import time
import zipfile

from proxy.checks.base import CheckContext, Services, Stage
from proxy.checks.contentutil import content
from proxy.checks.data.attachments import Attachments
from proxy.checks.data.mime import MimeStructure
from proxy.checks.data.phishing import Phishing
from proxy.checks.data.uribl import targets
from proxy.config.loader import from_dict
from proxy.model import Connection, Transaction

HEAD = (
    "From: news@shop.example\r\nTo: bob@example.test\r\nSubject: offers\r\n"
    "Date: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <1@shop.example>\r\nMIME-Version: 1.0\r\n"
)


def html_message(size: int = 20_000) -> bytes:
    rows, text = [], []
    i = 0
    while sum(map(len, rows)) + sum(map(len, text)) + 600 < size:
        rows.append(
            f'<tr><td><a href="https://www.site{i % 30}.example/item?id={i}&amp;ref=mail">Item {i}</a> '
            f"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.</td></tr>\r\n"
        )
        text.append(f"Item {i}: https://www.site{i % 30}.example/item?id={i} lorem ipsum dolor sit amet\r\n")
        i += 1
    html = "<html><body><table>\r\n" + "".join(rows) + "</table></body></html>\r\n"
    body = (
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "".join(text)
        + "\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
        + "\r\n--alt--\r\n"
    )
    return (HEAD + body).encode()


def zip_message() -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "quarterly notes " * 50)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.csv", "a,b,c\n1,2,3\n" * 200)
        z.writestr("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(2000))
        z.writestr("old.zip", inner.getvalue())
    b64 = base64.encodebytes(outer.getvalue()).replace(b"\n", b"\r\n").decode()
    body = (
        'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        "--mix\r\nContent-Type: text/plain\r\n\r\nThe report is attached, see https://intranet.example/r.\r\n"
        '--mix\r\nContent-Type: application/zip; name="report.zip"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "--mix--\r\n"
    )
    return (HEAD + body).encode()


async def run(message: bytes, n: int) -> tuple[float, list[str]]:
    services = Services(config=from_dict({}))
    cfg = services.config.checks
    checks = [
        MimeStructure(cfg["mime"], services),
        Attachments(cfg["attachments"], services),
        Phishing(cfg["phishing"], services),
    ]
    conn = Connection("bench", ipaddress.ip_address("192.0.2.1"), 0, ("192.0.2.1", 0))
    names: list[str] = []
    t0 = time.process_time()
    for _ in range(n):
        ctx = CheckContext(Stage.DATA, conn, Transaction("bench.1", "a@shop.example", {}), message=message)
        names = []
        for c in checks:
            names += [s.name for s in await c.check(ctx)]
        found = await content(ctx, services)
        targets(found.links, frozenset(), True)
    return (time.process_time() - t0) / n * 1000, names


def calibration() -> float:
    """Microseconds of CPU for ``sum(range(1000))`` (best of 5): how fast the machine is right
    now, to compare runs made under different load (18.8 us here at a load average of 1.6)."""
    best = 1e9
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(2000):
            sum(range(1000))
        best = min(best, (time.process_time() - t0) / 2000 * 1e6)
    return best


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"calibration: sum(range(1000)) takes {calibration():.1f} us of CPU now")
    empty = (HEAD + "Content-Type: text/plain\r\n\r\nhi\r\n").encode()
    for label, msg in (("html20k", html_message()), ("zip", zip_message()), ("tiny", empty)):
        asyncio.run(run(msg, 50))  # warm up (PSL load, regex compilation)
        rounds = [asyncio.run(run(msg, n)) for _ in range(5)]
        times = sorted(ms for ms, _ in rounds)
        names = rounds[0][1]
        print(
            f"{label}: {len(msg)} bytes, {times[0]:.3f} ms CPU per message (min of 5 rounds; "
            f"median {times[2]:.3f}), symbols={names or 'none'}, n={n}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
