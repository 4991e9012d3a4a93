"""The console's state page: scan and window_clear in every store, and releasing an IP from the
penalty box / clearing greylist entries through the console, confirmed, audited, admin only."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from proxy.state.base import Store
from proxy.state.memory import MemoryStore
from proxy.state.redis_store import RedisStore
from proxy.state.sqlite_store import SqliteStore
from tests.harness.clients import smtp
from tests.harness.console import VIEWER_PASSWORD, ConsoleClient, console_config
from tests.harness.proc import Spamgate, free_port
from tests.harness.redis_server import RedisServer


async def _scan_and_clear(store: Store) -> None:
    await store.greylist("gl|192.0.2.0/24|a@x.test|b@y.test", 60, 3600, 86400)
    await store.greylist("gl|192.0.2.0/24|c@x.test|b@y.test", 60, 3600, 86400)
    await store.greylist("gl|198.51.100.0/24|a@x.test|b@y.test", 60, 3600, 86400)
    await store.set("glwl|net|192.0.2.0/24", "1", 60)
    await store.set("gl|gone", "1", 0.001)
    await asyncio.sleep(0.01)
    assert sorted(await store.scan_names("gl|192.0.2.0/24|")) == [
        "gl|192.0.2.0/24|a@x.test|b@y.test",
        "gl|192.0.2.0/24|c@x.test|b@y.test",
    ]
    assert len(await store.scan_names("gl|", limit=2)) == 2
    assert "gl|gone" not in await store.scan_names("gl|")
    assert await store.scan_names("glwl|") == ["glwl|net|192.0.2.0/24"]
    assert await store.scan_names("gl*") == [], "no pattern characters"
    await store.window_hit("pen|192.0.2.1", 600)
    await store.window_hit("pen|192.0.2.1", 600)
    assert await store.window_hit("pen|192.0.2.1", 600, 0) == 2
    await store.window_clear("pen|192.0.2.1", 600)
    assert await store.window_hit("pen|192.0.2.1", 600, 0) == 0


async def test_scan_and_window_clear_memory() -> None:
    await _scan_and_clear(MemoryStore(1.0))


async def test_scan_and_window_clear_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"), 2.0)
    try:
        await _scan_and_clear(store)
    finally:
        await store.close()


async def test_scan_and_window_clear_redis(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, 2.0)
    try:
        await _scan_and_clear(store)
    finally:
        await store.close()


@pytest.fixture
def boxed(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    db = tmp_path / "state.db"
    cfg = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "store": {"url": f"sqlite:///{db}"},
        "checks": {"reputation": {"penalty_rejects": 3, "exempt_networks": []}},
        **console_config(),
    }
    sg = Spamgate(tmp_path / "sg", cfg).start()
    sg.wait_log("admin_listening")

    async def seed() -> None:
        store = SqliteStore(str(db), 2.0)  # the same shared file the workers use
        await store.set("box|127.0.7.1", "1", 900)
        for _ in range(3):
            await store.window_hit("pen|127.0.7.1", 600)
        await store.greylist("gl|127.0.7.0/24|a@x.test|bob@example.test", 60, 3600, 86400)
        await store.greylist("gl|127.0.8.0/24|spam@bad.test|bob@example.test", 60, 3600, 86400)
        await store.set("glwl|dom|bad.test", "1", 3600)
        await store.close()

    asyncio.run(seed())
    yield sg, port
    sg.stop()


def test_release_from_penalty_box(boxed) -> None:  # type: ignore[no-untyped-def]
    sg, port = boxed
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtp(sg.port, source_ip="127.0.7.1")
    assert info.value.smtp_code == 421
    c = ConsoleClient(port)
    assert c.login() == 303
    status, page = c.get("/console/state?ip=127.0.7.1")
    assert status == 200
    assert "in the penalty box" in page
    assert 'id="op-release"' in page
    assert "gl|127.0.7.0/24|a@x.test|bob@example.test" in page
    # The first POST asks for a confirmation and changes nothing.
    status, page = c.post("/console/state", {"ip": "127.0.7.1", "op": "release"}, csrf_from="/console/state")
    assert status == 200
    assert "Really release 127.0.7.1 from the penalty box" in page
    assert 'id="confirm-yes"' in page
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(sg.port, source_ip="127.0.7.1")
    # A viewer cannot, even with its own valid CSRF token.
    v = ConsoleClient(port)
    assert v.login(VIEWER_PASSWORD) == 303
    _, vpage = v.get("/console/state?ip=127.0.7.1")
    assert 'id="op-release"' not in vpage
    form = {"ip": "127.0.7.1", "op": "release", "confirm": "yes"}
    assert v.post("/console/state", form, csrf_from="/console/state")[0] == 403
    # Confirmed by the admin: released, audited, and the client is let in again.
    status, page = c.post("/console/state", form, csrf_from="/console/state")
    assert status == 303
    status, page = c.get(c.last_headers["location"])
    assert "done: release 127.0.7.1" in page
    with smtp(sg.port, source_ip="127.0.7.1") as s:
        assert s.ehlo("mail.sender.test")[0] == 250
    audit = sg.events("console_audit")
    assert audit[-1]["operation"] == "release"
    assert audit[-1]["ip"] == "127.0.7.1"
    assert audit[-1]["role"] == "admin"
    # Greylist entries of the IP's netblock, then those of a sender and its domain's allowlist.
    form = {"ip": "127.0.7.1", "op": "clear_grey_net", "confirm": "yes"}
    assert c.post("/console/state", form, csrf_from="/console/state")[0] == 303
    assert "gl|127.0.7.0/24|" not in c.get("/console/state?ip=127.0.7.1")[1]
    _, page = c.get("/console/state?sender=spam@bad.test")
    assert "gl|127.0.8.0/24|spam@bad.test|bob@example.test" in page
    assert 'id="op-clear_allow_dom"' in page
    for op in ("clear_grey_sender", "clear_allow_dom"):
        form = {"sender": "spam@bad.test", "op": op, "confirm": "yes"}
        assert c.post("/console/state", form, csrf_from="/console/state")[0] == 303
    _, page = c.get("/console/state?sender=spam@bad.test")
    assert "gl|127.0.8.0/24" not in page
    assert 'id="op-clear_allow_dom"' not in page, "nothing to clear"
    assert '<td>greylist allowlist of bad.test</td><td><span class="badge accept">no</span>' in page
    assert c.post("/console/state", {"ip": "nope", "op": "release"}, csrf_from="/console/state")[0] == 400
