"""Export end to end: a trap hit on site A reaches site B through an rbldnsd zone alone (a real
rbldnsd serving the zone file A writes on its schedule), the token-protected /feed on A's admin
listener, and the operator CLI (feed export, state list/clear) on the shared store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.admin import get
from tests.harness.clients import Raw
from tests.harness.proc import ROOT, Spamgate, free_port, to_toml
from tests.harness.rbldnsd import Rbldnsd, public_dir
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
TRAP = {"enabled": True, "addresses": ["trap@example.test"], "exempt_networks": []}
SITE_A = {
    "checks": {"spamtrap": TRAP, "penalty_box": {"exempt_networks": []}},
}


def hit_trap(sg: Spamgate, src: str) -> None:
    c = Raw(sg.port, source_ip=src)
    assert c.reply().startswith("220")
    c.cmd("EHLO trapper.test")
    c.cmd("MAIL FROM:<a@sender.test>")
    assert c.cmd("RCPT TO:<trap@example.test>").startswith("550 5.1.1")
    c.cmd("QUIT")
    c.close()


def wait_for(pred: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_trap_hit_on_site_a_rejected_by_site_b_through_rbldnsd(
    sink: Sink, spamgate_factory: Factory, tmp_path: Path
) -> None:
    pub = public_dir()
    zone = pub / "spamgate.zone"
    a = spamgate_factory(
        {**SITE_A, "sharing": {"zone_file": str(zone), "zone_interval": "1s"}},
    )
    wait_for(zone.exists)  # written at start, then every second
    rb = Rbldnsd(tmp_path / "rbldnsd", {"feed.test": zone}).start()
    try:
        assert rb.query("7.0.0.127.feed.test") == []
        hit_trap(a, "127.0.0.7")
        wait_for(lambda: "127.0.0.7 :127.0.0.2:TRAP_HIT until" in zone.read_text())
        assert "trap@example.test" not in zone.read_text()  # the trap itself never leaves
        wait_for(lambda: rb.query("7.0.0.127.feed.test") == ["127.0.0.2"])

        # Site B: its own store (memory), nothing shared with A but the DNS list.
        b = spamgate_factory(
            {
                "relay": {"downstream": f"127.0.0.1:{sink.port}"},
                "dns": {"nameservers": [rb.address], "timeout": "500ms"},
                "checks": {"dnsbl": {"zones": ["feed.test=127.0.0.[2..5]*20"]}},
            }
        )
        c = Raw(b.port, source_ip="127.0.0.7")
        assert c.reply().startswith("554 5.7.1"), "refused at the greeting"
        c.close()
        ok = Raw(b.port, source_ip="127.0.0.8")
        assert ok.reply().startswith("220")
        ok.close()
        conn = b.wait_log("connection", client_ip="127.0.0.7")[-1]
        assert "RBL_LISTED(20){feed.test:127.0.0.2}" in conn["symbols"]
    finally:
        rb.stop()
        shutil.rmtree(pub, ignore_errors=True)


def test_feed_on_admin_listener_needs_the_token(spamgate_factory: Factory) -> None:
    port = free_port()
    sg = spamgate_factory(
        {**SITE_A, "metrics": {"listen": f"127.0.0.1:{port}"}, "sharing": {"feed_token": "s3cret"}}
    )
    hit_trap(sg, "127.0.0.9")
    time.sleep(0.2)
    assert get(port, "/feed")[0] == 403
    assert get(port, "/feed?token=wrong")[0] == 403
    status, body = get(port, "/feed?token=s3cret")
    assert status == 200
    assert "127.0.0.9 # TRAP_HIT until " in body
    status, body = get(port, "/feed?token=s3cret&format=json")
    entry = json.loads(body)["entries"][0]
    assert entry["ip"] == "127.0.0.9"
    assert entry["reason"] == "TRAP_HIT"
    assert entry["until"] > time.time() + 23 * 3600  # the default penalty_time is 24h
    import http.client

    h = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h.request("GET", "/feed?format=zone", headers={"Authorization": "Bearer s3cret"})
    r = h.getresponse()
    assert r.status == 200
    assert "127.0.0.9 :127.0.0.2:TRAP_HIT" in r.read().decode()
    h.close()


def test_feed_is_off_without_a_token(spamgate_factory: Factory) -> None:
    port = free_port()
    spamgate_factory({"metrics": {"listen": f"127.0.0.1:{port}"}})
    assert get(port, "/feed?token=")[0] == 404


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


def test_cli_state_list_clear_and_feed_export(
    sink: Sink, spamgate_factory: Factory, tmp_path: Path, redis_server: Any
) -> None:
    store = {"url": redis_server.url}
    rc = {"enabled": True, "exempt_networks": []}
    sg = spamgate_factory(
        {
            **SITE_A,
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "store": store,
            "checks": {**SITE_A["checks"], "recipient_cache": rc},
        }
    )
    sink.state.reject_rcpts = {"gone@example.test"}
    hit_trap(sg, "127.0.0.10")
    c = Raw(sg.port, source_ip="127.0.0.11")
    c.reply()
    c.cmd("EHLO x.test")
    c.cmd("MAIL FROM:<a@sender.test>")
    assert c.cmd("RCPT TO:<gone@example.test>").startswith("550 5.1.1")
    c.cmd("QUIT")
    c.close()
    time.sleep(0.3)

    cfg = tmp_path / "cli.toml"
    cfg.write_text(to_toml({"store": store, "sharing": {"zone_file": str(tmp_path / "out.zone")}}))
    r = cli(cfg, "state", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["127.0.0.10"]["kind"] == "penalty_box"
    assert rows["127.0.0.10"]["reason"] == "TRAP_HIT{trap@example.test}"
    assert rows["gone@example.test"]["kind"] == "unknown_recipient"
    assert rows["gone@example.test"]["until"] > time.time() + 2 * 3600
    text = cli(cfg, "state", "list").stdout
    assert "penalty_box" in text
    assert "until 20" in text

    r = cli(cfg, "feed", "export")
    assert r.returncode == 0, r.stderr
    assert "127.0.0.10 :127.0.0.2:TRAP_HIT until" in (tmp_path / "out.zone").read_text()
    assert (
        json.loads(cli(cfg, "feed", "export", "--format", "json").stdout)["entries"][0]["ip"] == "127.0.0.10"
    )

    assert cli(cfg, "state", "clear", "penalty", "127.0.0.10").returncode == 0
    assert cli(cfg, "state", "clear", "penalty", "127.0.0.10").returncode == 1
    assert cli(cfg, "state", "clear", "recipient", "Gone@example.test").returncode == 0
    assert json.loads(cli(cfg, "state", "list", "--json").stdout) == []
    # Released: the client connects again.
    assert Raw(sg.port, source_ip="127.0.0.10").reply().startswith("220")
