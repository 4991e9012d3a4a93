"""The content checks' symbols from crafted messages, without SMTP: table-driven, one fresh
transaction per case (so one shared analysis each), plus the busy thread pool."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import ipaddress
import tarfile
import threading
import zipfile
from typing import Any

import pytest

from proxy.checks import contentutil
from proxy.checks.base import Check, CheckContext, Services, Stage
from proxy.checks.data.attachments import Attachments
from proxy.checks.data.mime import MimeStructure
from proxy.checks.data.phishing import Phishing
from proxy.config.loader import from_dict
from proxy.model import Connection, Transaction

PE = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(120)


def attach(name: str, data: bytes, ctype: str = "application/octet-stream") -> str:
    b64 = base64.b64encode(data).decode()
    return f'Content-Type: {ctype}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}'


def message(*parts: str) -> bytes:
    body = "".join(f"--b\r\n{p}\r\n" for p in parts) + "--b--\r\n"
    return ('From: a@sender.test\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + body).encode()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def tarred(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run_checks(msg: bytes, config: dict[str, Any] | None = None) -> dict[str, str]:
    services = Services(config=from_dict({"checks": config or {}}))
    opts = services.config.checks
    checks: list[Check] = [
        MimeStructure(opts["mime"], services),
        Attachments(opts["attachments"], services),
        Phishing(opts["phishing"], services),
    ]
    conn = Connection("t", ipaddress.ip_address("192.0.2.1"), 0, ("192.0.2.1", 0))
    ctx = CheckContext(Stage.DATA, conn, Transaction("t.1", "a@sender.test", {}), message=msg)

    async def go() -> dict[str, str]:
        out: dict[str, str] = {}
        for c in checks:
            out.update({s.name: s.evidence for s in await c.check(ctx)})
        return out

    return asyncio.run(go())


CASES: list[tuple[str, bytes, dict[str, Any], dict[str, str]]] = [
    ("clean text", message("Content-Type: text/plain\r\n\r\nhello https://www.example.org/"), {}, {}),
    ("pdf that is a pdf", message(attach("a.pdf", b"%PDF-1.7\n", "application/pdf")), {}, {}),
    ("script by extension", message(attach("run.JS", b"alert(1)")), {}, {"ATTACH_BAD_EXTENSION": "run.JS"}),
    (
        "allowed by the site",
        message(attach("disk.iso", b"\x00" * 64)),
        {"attachments": {"allow_extensions": ["iso"]}},
        {},
    ),
    (
        "added by the site",
        message(attach("notes.one", b"\x00" * 64)),
        {"attachments": {"extra_extensions": ["one"]}},
        {"ATTACH_BAD_EXTENSION": "notes.one"},
    ),
    (
        "padded double extension",
        message(attach("invoice.pdf        .scr", b"x")),
        {},
        {"ATTACH_BAD_EXTENSION": "invoice.pdf        .scr", "ATTACH_DOUBLE_EXT": "invoice.pdf        .scr"},
    ),
    (
        "image that is a zip",
        message(attach("cat.png", zipped({"a.txt": b"x"}), "image/png")),
        {},
        {"ATTACH_TYPE_MISMATCH": "cat.png:png->zip"},
    ),
    (
        "program in a tar.gz",
        message(attach("logs.tgz", tarred({"logs/today.txt": b"x", "logs/fix.exe": PE}))),
        {},
        {"ATTACH_ARCHIVE_BAD": "logs.tgz/logs/fix.exe"},
    ),
    (
        "double extension inside a zip",
        message(attach("docs.zip", zipped({"scan.pdf.vbs": b"x"}))),
        {},
        {"ATTACH_ARCHIVE_BAD": "docs.zip/scan.pdf.vbs", "ATTACH_DOUBLE_EXT": "docs.zip/scan.pdf.vbs"},
    ),
    (
        "gzip of a program",
        message(attach("update.gz", gzip.compress(PE))),
        {},
        {"ATTACH_ARCHIVE_BAD": "update.gz/update"},
    ),
    (
        "archive deeper than allowed",
        message(attach("a.zip", zipped({"b.zip": zipped({"c.zip": zipped({"d.txt": b"x"})})}))),
        {"attachments": {"archive_depth": 2}},
        {"ATTACH_ARCHIVE_UNCHECKED": "a.zip/b.zip/c.zip:depth"},
    ),
    (
        "rar is recognised, not opened",
        message(attach("files.rar", b"Rar!\x1a\x07\x01\x00" + bytes(32))),
        {},
        {"ATTACH_ARCHIVE_UNCHECKED": "files.rar:rar not opened"},
    ),
    (
        "link text shows another domain",
        message('Content-Type: text/html\r\n\r\n<a href="https://login.evil.test/">www.mybank.example</a>'),
        {},
        {"PHISH_LINK_MISMATCH": "mybank.example->evil.test"},
    ),
    (
        "redirector of the site's choice",
        message('Content-Type: text/html\r\n\r\n<a href="https://click.news.example/x">www.shop.example</a>'),
        {"phishing": {"redirectors": ["news.example"]}},
        {},
    ),
    (
        "same registrable domain",
        message(
            'Content-Type: text/html\r\n\r\n<a href="https://shop.example.co.uk/a">www.example.co.uk</a>'
        ),
        {},
        {},
    ),
    (
        "bad boundary",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n',
        {},
        {"MIME_BAD_BOUNDARY": "no closing delimiter"},
    ),
]


@pytest.mark.parametrize(("label", "msg", "config", "want"), CASES, ids=[c[0] for c in CASES])
def test_content_symbols(label: str, msg: bytes, config: dict[str, Any], want: dict[str, str]) -> None:
    assert run_checks(msg, config) == want


def test_busy_pool_is_mime_unchecked() -> None:
    """A message over thread_above when the only content thread stays busy: MIME_UNCHECKED
    after thread_wait, no other content symbol, nothing queued."""
    services = Services(
        config=from_dict({"checks": {"mime": {"thread_above": 1, "threads": 1, "thread_wait": "50ms"}}})
    )
    conn = Connection("t", ipaddress.ip_address("192.0.2.1"), 0, ("192.0.2.1", 0))
    release = threading.Event()
    mime = MimeStructure(services.config.checks["mime"], services)
    attachments = Attachments(services.config.checks["attachments"], services)

    async def go() -> tuple[dict[str, str], dict[str, str]]:
        pool = contentutil.pool(services)
        blocker = asyncio.ensure_future(pool.run(release.wait, 5))
        await asyncio.sleep(0.05)
        ctx = CheckContext(
            Stage.DATA, conn, Transaction("t.1", "a@x.test", {}), message=message(attach("a.exe", PE))
        )
        first = {s.name: s.evidence for s in await mime.check(ctx)}
        second = {s.name: s.evidence for s in await attachments.check(ctx)}
        release.set()
        await blocker
        return first, second

    try:
        first, second = asyncio.run(go())
    finally:
        contentutil.pool(services).shutdown()
    assert first == {"MIME_UNCHECKED": "content: all 1 threads busy"}
    assert second == {}
