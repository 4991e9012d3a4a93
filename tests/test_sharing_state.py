"""The store's scan operation and the penalty box, on memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from proxy.state import Store, build_store
from proxy.state.config import StoreConfig
from proxy.state.penalty import Penalty, PenaltyBox
from tests.harness.proc import ROOT, to_toml
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


def test_explain_shows_penalty_and_trap_without_writing(tmp_path: Path) -> None:
    """`spamgate explain` shows the penalty box entry with reason and expiry, and a trap
    recipient as TRAP_HIT, but boxes nobody (a dry run)."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def seed() -> None:
        st = build_store(StoreConfig(url=url, timeout=2.0))
        await PenaltyBox(st).add("192.0.2.66", "RCPT_DICTIONARY{25}", 600)
        await st.close()

    asyncio.run(seed())
    cfg = tmp_path / "x.toml"
    cfg.write_text(
        to_toml(
            {
                "store": {"url": url},
                "dns": {"nameservers": ["127.0.0.1:1"], "timeout": "200ms", "retries": 0},
                "checks": {
                    "penalty_box": {"exempt_networks": []},
                    "spamtrap": {"enabled": True, "addresses": ["trap@example.test"], "exempt_networks": []},
                },
                "relay": {"local_domains": ["example.test"]},
            }
        )
    )

    def explain(ip: str) -> dict[str, Any]:
        args = ["--ip", ip, "--helo", "h.test", "--from", "a@s.test", "--rcpt", "trap@example.test", "--json"]
        r = subprocess.run(
            [sys.executable, "-m", "proxy", "explain", "--config", str(cfg), *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    boxed = explain("192.0.2.66")
    assert boxed["stopped_at"] == "connect"
    (hit,) = [h for h in boxed["stages"][0]["symbols"] if h["symbol"] == "PENALTY_BOX"]
    assert hit["evidence"].startswith("RCPT_DICTIONARY{25};until=20")
    assert boxed["reply"].startswith("421 4.7.0")
    trap = explain("192.0.2.67")
    rcpt = [s for s in trap["stages"] if s["stage"] == "rcpt"][0]
    assert "TRAP_HIT" in {h["symbol"] for h in rcpt["symbols"]}
    assert trap["reply"].startswith("550 5.1.1")

    async def listed() -> list[str]:
        st = build_store(StoreConfig(url=url, timeout=2.0))
        try:
            return [p.ip for p in await PenaltyBox(st).list()]
        finally:
            await st.close()

    assert asyncio.run(listed()) == ["192.0.2.66"]  # the trap in explain boxed nobody


async def test_collect_exports_boxes_and_bad_reputation(store: Store) -> None:  # noqa: F811
    from proxy.config.loader import from_dict
    from proxy.sharing.collect import collect

    config = from_dict({"checks": {"reputation": {"min_messages": 2, "bad_ratio": 0.7}}})
    await PenaltyBox(store).add("192.0.2.1", "TRAP_HIT{secret-trap@example.test}", 600)
    now = time.time()
    rep_box = Penalty("192.0.2.2", "REPUTATION_PENALTY", now, now + 300).to_json()
    await store.set("box|192.0.2.2", rep_box, 300)
    await store.decay("rep|ip|192.0.2.3", 0, 3, 86400, 3600)  # bad: 3 rejects
    await store.decay("rep|ip|192.0.2.4", 3, 0, 86400, 3600)  # good
    await store.decay("rep|ip|192.0.2.5", 0, 1, 86400, 3600)  # too few messages
    entries = await collect(store, config, 100)
    got = {e.network: (e.reason, round(e.until - now)) for e in entries}
    assert got == {
        "192.0.2.1": ("TRAP_HIT", 600),  # the reason without its evidence: the trap stays secret
        "192.0.2.2": ("REPUTATION_PENALTY", 300),
        "192.0.2.3": ("REPUTATION_BAD", 600),  # two export intervals (5m) from now
    }
    off = from_dict({"sharing": {"include_reputation": False}})
    assert {e.network for e in await collect(store, off, 100)} == {"192.0.2.1", "192.0.2.2"}
