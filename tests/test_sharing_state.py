"""The store's scan operation and the penalty box, on memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import time

from proxy.state import Store
from proxy.state.penalty import Penalty, PenaltyBox
from tests.test_state_store import store  # noqa: F401 - the three-backend fixture


async def test_scan_lists_live_keys_by_prefix(store: Store) -> None:  # noqa: F811
    await store.set("pbox|192.0.2.1", "a", 60)
    await store.set("pbox|2001:db8::1", "b", 60)
    await store.set("pbox|gone", "c", 0.1)
    await store.set("rcptbad|x_%@example.test", "550", 60)
    await store.set("other", "d", 60)
    await store.incr("pbox_counter", 60)  # not a string entry of the prefix "pbox|"
    await asyncio.sleep(0.25)
    assert sorted(await store.scan("pbox|")) == [("pbox|192.0.2.1", "a"), ("pbox|2001:db8::1", "b")]
    assert await store.scan("rcptbad|x_%") == [("rcptbad|x_%@example.test", "550")]
    assert await store.scan("rcptbad|x__") == []
    assert len(await store.scan("pbox|", limit=1)) == 1


async def test_penalty_box_keeps_the_later_expiry(store: Store) -> None:  # noqa: F811
    box = PenaltyBox(store)
    first = await box.add("192.0.2.7", "TRAP_HIT{t@example.test}", 600)
    second = await box.add("192.0.2.7", "RCPT_DICTIONARY{20}", 60)
    assert second.reason == "RCPT_DICTIONARY{20}"
    assert abs(second.until - first.until) < 0.01  # a shorter penalty never shortens a longer one
    got = await box.get("192.0.2.7")
    assert got is not None
    assert got.reason == "RCPT_DICTIONARY{20}"
    assert abs(got.until - (time.time() + 600)) < 5
    await box.add("2001:db8::0:1", "TRAP_HIT{a@b.test}", 60)
    assert [p.ip for p in await box.list()] == ["192.0.2.7", "2001:db8::1"]
    assert await box.clear("192.0.2.7") is True
    assert await box.clear("192.0.2.7") is False
    assert await box.get("192.0.2.7") is None


def test_penalty_parse_tolerates_foreign_values() -> None:
    assert Penalty.parse("192.0.2.1", "1") == Penalty("192.0.2.1", "1", 0.0, 0.0)
