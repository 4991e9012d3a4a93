"""The console's history: bounded in every store, shared by the workers, cheap on the hot path,
behind a login, and everything from mail shown as text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.console.backends import Backend, Filters, MemoryBackend, RedisBackend, SqliteBackend
from proxy.console.history import HistoryWriter
from proxy.console.passwords import hash_password, verify_password
from proxy.model import Connection, Hit, Transaction
from proxy.state.redis_store import make_client
from tests.harness.clients import smtp
from tests.harness.console import ADMIN_PASSWORD, VIEWER_PASSWORD, ConsoleClient, console_config
from tests.harness.proc import Spamgate, free_port
from tests.harness.redis_server import RedisServer

MSG = "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {
        "ts": time.time(),
        "ref": f"abcd{i:04d}.1",
        "ip": f"192.0.2.{i % 250}",
        "name": "",
        "helo": "h.test",
        "sender": f"s{i}@sender.test",
        "rcpts": [{"to": f"r{i}@example.test", "reply": "250 ok"}],
        "stage": "data",
        "outcome": "delivered",
        "action": "accept",
        "would_be": "accept",
        "score": 0.0,
        "symbols": [{"name": "SYM_A" if i % 2 else "SYM_B", "score": 1.0, "evidence": "x", "observe": False}],
        "reply": "",
        "downstream_reply": "250 ok",
        "size": 10,
        "elapsed_ms": 1.0,
        "pid": 1,
    }
    row.update(over)
    return row


def test_password_hashes() -> None:
    h = hash_password("correct horse")
    assert h.startswith("scrypt$")
    assert verify_password("correct horse", h)
    assert not verify_password("wrong", h)
    assert not verify_password("x", "")
    assert not verify_password("x", "scrypt$bad")
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    dk = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    assert verify_password("pw", f"pbkdf2_sha256$1000${b64(salt)}${b64(dk)}")


async def _exercise(backend: Backend) -> None:
    await backend.write([_row(i) for i in range(30)])
    rows = await backend.query(Filters(), limit=100)
    assert len(rows) == 20, "the row cap holds"
    assert rows[0]["ref"] == "abcd0029.1", "newest first"
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert [r["ref"] for r in await backend.query(Filters(ip="192.0.2.25"))] == ["abcd0025.1"]
    assert len(await backend.query(Filters(symbol="sym_a"))) == 10
    assert len(await backend.query(Filters(sender="S21@"))) == 1
    assert len(await backend.query(Filters(rcpt="r22@example"))) == 1
    assert len(await backend.query(Filters(ref="abcd0023"))) == 1, "a connection id finds its transactions"
    assert len(await backend.query(Filters(action="reject"))) == 0
    newest = rows[0]["id"]
    await backend.write([_row(99, action="reject")])
    fresh = await backend.query(Filters(), after=newest)
    assert [r["ref"] for r in fresh] == ["abcd0099.1"], "live updates: only rows after the last seen id"
    assert (await backend.get("abcd0099.1"))["action"] == "reject"
    assert await backend.get("nope.1") is None
    # Retention: rows older than the window are not shown (and are deleted on the next write).
    await backend.write([_row(200, ts=time.time() - 7200)])
    assert all(r["ref"] != "abcd0200.1" for r in await backend.query(Filters()))


async def test_memory_backend_bounded() -> None:
    await _exercise(MemoryBackend(20, 3600))


async def test_sqlite_backend_bounded(tmp_path: Path) -> None:
    b = SqliteBackend(str(tmp_path / "state.db"), 20, 3600)
    try:
        await _exercise(b)
        import sqlite3

        n = sqlite3.connect(tmp_path / "state.db").execute("SELECT COUNT(*) FROM history").fetchone()[0]
        assert n <= 21, "trimmed in the table, not only in what is shown"
    finally:
        await b.close()


async def test_redis_backend_bounded(redis_server: RedisServer) -> None:
    b = RedisBackend(make_client(redis_server.url, 2.0), "sg:", 20, 3600)
    try:
        await _exercise(b)
        assert int(redis_server.cli("LLEN", "sg:{history}").strip()) == 20
        assert 0 < int(redis_server.cli("TTL", "sg:{history}").strip()) <= 3601
    finally:
        await b.close()


class _SlowBackend(MemoryBackend):
    async def write(self, rows: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        await super().write(rows)


async def test_writer_is_cheap_and_bounded() -> None:
    """The session pays for a dict and a deque append: measured per transaction, and a full queue
    drops rows (counted) instead of growing or waiting."""
    backend = _SlowBackend(100000, 3600)
    writer = HistoryWriter(backend, queue_max=5000, flush_every=0.01)
    conn = Connection("c0ffee00", __import__("ipaddress").ip_address("192.0.2.1"), 25, ("192.0.2.1", 25))
    conn.helo = "mail.sender.test"
    txn = Transaction("c0ffee00.1", "a@sender.test", {})
    txn.notes["hits"] = [Hit(f"SYM_{i}", "evidence", 1.0, "check") for i in range(8)]
    n = 4000
    t0 = time.perf_counter()
    for _ in range(n):
        writer.on_transaction(conn, txn, "delivered")
    per_txn = (time.perf_counter() - t0) / n
    print(f"history on_transaction: {per_txn * 1e6:.1f} µs per transaction")
    assert per_txn < 100e-6
    for _ in range(3000):
        writer.on_transaction(conn, txn, "delivered")
    assert len(writer.queue) <= 5000
    assert writer.dropped >= 2000
    await writer.close()
    assert writer.written + writer.dropped == 7000


def _start(tmp_path: Path, sink_port: int | None = None, **extra: Any) -> tuple[Spamgate, int]:
    port = free_port()
    cfg: dict[str, Any] = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "store": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        **console_config(),
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    sg = Spamgate(tmp_path / "sg", cfg).start()
    sg.wait_log("admin_listening")
    return sg, port


@pytest.fixture
def started(tmp_path: Path) -> Any:
    made: list[Spamgate] = []

    def make(**extra: Any) -> tuple[Spamgate, int]:
        sg, port = _start(tmp_path, **extra)
        made.append(sg)
        return sg, port

    yield make
    for sg in made:
        sg.stop()


def test_login_required_and_safe_headers(started: Callable[..., tuple[Spamgate, int]]) -> None:
    _, port = started()
    c = ConsoleClient(port)
    status, _ = c.get("/console/")
    assert status == 303
    assert c.last_headers["location"] == "/console/login"
    assert c.get("/console/api/history")[0] == 403
    assert c.login("wrong password") == 403
    assert c.get("/console/api/history")[0] == 403
    # A login without the form's token (a cross-site POST) is refused.
    status, _ = c.request("POST", "/console/login", {"password": ADMIN_PASSWORD, "csrf": "forged"})
    assert status == 403
    assert "sg_session" not in c.cookies
    assert c.login() == 303
    cookie = next(x for x in c.set_cookies if x.startswith("sg_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie
    status, text = c.get("/console/")
    assert status == 200
    assert "Live history" in text
    csp = c.last_headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert c.last_headers["x-frame-options"] == "DENY"
    assert "<script>" not in text.replace('<script src="/console/static/console.js" defer></script>', "")
    assert c.get("/console/static/console.js")[0] == 200
    assert c.get("/console/static/../app.py")[0] == 404
    # Every POST needs the session's CSRF token.
    assert c.request("POST", "/console/logout", {"csrf": "nope"})[0] == 403
    assert c.post("/console/logout", {})[0] == 303
    assert c.get("/console/api/history")[0] == 403
    # The viewer logs in with its own password.
    v = ConsoleClient(port)
    assert v.login(VIEWER_PASSWORD) == 303
    assert "viewer" in v.get("/console/")[1]
    # /metrics and the health endpoints stay open (scrapers) and unchanged.
    assert ConsoleClient(port).get("/healthz") == (200, "ok\n")


def test_no_login_configured_means_no_console(tmp_path: Path) -> None:
    port = free_port()
    sg = Spamgate(tmp_path / "sg", {"metrics": {"listen": f"127.0.0.1:{port}"}}).start()
    try:
        sg.wait_log("admin_listening")
        c = ConsoleClient(port)
        status, text = c.get("/console/login")
        assert status == 503
        assert "console-password" in text
        assert c.request("POST", "/console/login", {"password": "", "csrf": ""})[0] == 503
    finally:
        sg.stop()


def test_history_across_workers_with_html_as_text(started: Callable[..., tuple[Spamgate, int]]) -> None:
    """Two worker processes write to one SQLite history; the console (worker 0) shows every
    transaction, and HTML from the envelope is escaped."""
    sg, port = started(server={"workers": 2})
    n = 12
    for i in range(n):
        with smtp(sg.port, source_ip=f"127.0.3.{i + 1}") as s:
            s.ehlo(f"mail{i}.sender.test")
            s.sendmail(f"a{i}@sender.test", ["bob@example.test"], MSG)
    with smtp(sg.port, source_ip="127.0.4.1") as s:
        s.ehlo("<script>alert(1)</script>")
        s.mail("<b>x</b>@sender.test")
        s.rset()
    c = ConsoleClient(port)
    assert c.login() == 303
    rows = c.wait_rows(n + 1)
    assert len(rows) == n + 1
    assert len({r["pid"] for r in rows}) == 2, "both workers' transactions are in the shared history"
    delivered = [r for r in rows if r["outcome"] == "delivered"]
    assert len(delivered) == n
    r = next(r for r in delivered if r["ip"] == "127.0.3.5")
    assert r["sender"] == "a4@sender.test"
    assert r["rcpts"][0]["to"] == "bob@example.test"
    assert r["downstream_reply"].startswith("250")
    assert r["stage"] == "data"
    assert [x["ip"] for x in c.history(ip="127.0.3.7")] == ["127.0.3.7"]
    assert all(x["action"] == "accept" for x in c.history(action="accept"))
    _, page = c.get("/console/?ip=127.0.4.1")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "<b>x</b>" not in page
    evil = next(x for x in rows if x["ip"] == "127.0.4.1")
    _, tx = c.get(f"/console/tx/{evil['ref']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tx
    assert "<script>alert" not in tx


def test_fleet_history_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two spamgate hosts sharing one Redis: the console of either shows the mail of both."""
    made = []
    try:
        for name in ("a", "b"):
            port = free_port()
            cfg = {
                "metrics": {"listen": f"127.0.0.1:{port}"},
                "store": {"url": redis_server.url},
                **console_config(),
            }
            sg = Spamgate(tmp_path / name, cfg).start()
            sg.wait_log("admin_listening")
            made.append((sg, port))
        for i, (sg, _) in enumerate(made):
            with smtp(sg.port, source_ip=f"127.0.10.{i + 1}") as s:
                s.ehlo("mail.sender.test")
                s.sendmail(f"host{i}@sender.test", ["bob@example.test"], MSG)
        c = ConsoleClient(made[0][1])
        assert c.login() == 303
        rows = c.wait_rows(2)
        assert sorted(r["sender"] for r in rows) == ["host0@sender.test", "host1@sender.test"]
        assert int(redis_server.cli("LLEN", "sg:{history}").strip()) == 2
    finally:
        for sg, _ in made:
            sg.stop()


def test_history_survives_a_reload(started: Callable[..., tuple[Spamgate, int]]) -> None:
    """SIGHUP swaps the generation; the history writer (shared like the store) keeps writing."""
    import signal

    sg, port = started()
    c = ConsoleClient(port)
    assert c.login() == 303
    for i in range(2):
        with smtp(sg.port, source_ip=f"127.0.11.{i + 1}") as s:
            s.ehlo("mail.sender.test")
            s.sendmail(f"before{i}@sender.test", ["bob@example.test"], MSG)
        if i == 0:
            c.wait_rows(1)
            sg.signal(signal.SIGHUP)
            sg.wait_log("reloaded")
    rows = c.wait_rows(2)
    assert sorted(r["sender"] for r in rows) == ["before0@sender.test", "before1@sender.test"]
    assert c.get("/console/")[0] == 200, "the login survives a reload"
