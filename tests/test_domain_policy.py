"""Per recipient domain policy: thresholds, greylisting, tag subject, observe mode; one policy
per transaction (452 4.5.3 for a recipient of another); `spamgate explain` shows route and policy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate, to_toml
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ["example.test", "strict.test", "tagme.test", "watch.test", "nogrey.test"]
POLICIES = [
    {"domains": ["strict.test"], "reject": 4.0},
    {"domains": ["tagme.test"], "tag": 2.0, "tag_subject_prefix": "[SPAM]", "greylist": False},
    {"domains": ["watch.test"], "reject": 4.0, "mode": "observe", "greylist": False},
    {"domains": ["nogrey.test"], "greylist": False},
]


def _config(sink: Sink, tmp: Path) -> dict[str, Any]:
    (tmp / "access").write_text("from:meh@sender.test 5\n")  # a score of 5 for this sender
    return {
        "relay": {"downstream": f"127.0.0.1:{sink.port}", "local_domains": DOMAINS},
        "tables": {"access_files": [str(tmp / "access")]},
        "policy": {"domains": POLICIES},
        "store": {"url": "memory://"},
        "checks": {"greylist": {"enabled": True, "exempt_networks": [], "min_score": 0.0, "delay": "1h"}},
    }


def test_each_domain_its_own_policy(spamgate_factory: Factory, sink: Sink, tmp_path: Path) -> None:
    sg = spamgate_factory(_config(sink, tmp_path))
    with smtp(sg.port, "127.0.0.5") as c:
        c.ehlo("client.sender.test")
        assert c.mail("meh@sender.test")[0] == 250
        code, text = c.rcpt("bob@example.test")  # global: 5 < reject 15, but greylisted
        assert (code, text[:5]) == (451, b"4.7.1"), text
        code, text = c.rcpt("x@strict.test")  # reject = 4
        assert (code, text[:5]) == (550, b"5.7.1"), text
        assert c.rcpt("y@nogrey.test")[0] == 250  # greylisting off for this domain
        code, text = c.rcpt("z@tagme.test")  # another policy than the accepted recipient's
        assert code == 452, text
        assert text.startswith(b"4.5.3 [ref ")
        assert b"another filtering policy" in text
        assert c.data(message("nogrey"))[0] == 250
        # The tag policy's recipient, again alone: tagged with its own subject prefix.
        assert c.mail("meh@sender.test")[0] == 250
        assert c.rcpt("z@tagme.test")[0] == 250
        assert c.data(message("tag me"))[0] == 250
        # Observe mode for one domain: relayed, logged as it would have been refused.
        assert c.mail("meh@sender.test")[0] == 250
        assert c.rcpt("w@watch.test")[0] == 250
        assert c.data(message("watch"))[0] == 250
    assert [m.rcpts for m in sink.messages] == [["y@nogrey.test"], ["z@tagme.test"], ["w@watch.test"]]
    first, tagged, watched = (m.data for m in sink.messages)
    assert b"~GREYLISTED" in first  # logged as observed, not enforced
    assert b"Subject: [SPAM] tag me" in tagged
    assert b"X-Spam-Flag: YES" in tagged
    assert b"Subject: [SPAM]" not in first + watched
    txs = sg.wait_log("transaction", count=3)
    assert [t.get("policy") for t in txs] == ["nogrey.test", "tagme.test", "watch.test"]
    assert txs[2]["would_be"] == "reject"


def test_explain_shows_route_and_policy(sink: Sink, tmp_path: Path) -> None:
    cfg = _config(sink, tmp_path)
    cfg["relay"]["routes"] = [
        {"domains": ["strict.test"], "downstreams": ["10.0.0.5:25", "10.0.0.6:25"]},
        {"domains": ["tagme.test"], "downstreams": ["lmtp:10.0.1.9:24"]},
    ]
    cfg["metrics"] = {"listen": ""}
    cfg["dns"] = {"nameservers": ["127.0.0.1:1"], "timeout": "200ms", "retries": 0}  # as test_explain
    (tmp_path / "explain.toml").write_text(to_toml(cfg))
    args = ["--ip", "127.0.0.5", "--helo", "mail.sender.test", "--from", "meh@sender.test"]
    for r in ("x@strict.test", "z@tagme.test", "bob@example.test", "y@nogrey.test"):
        args += ["--rcpt", r]
    run = [sys.executable, "-m", "proxy", "explain", "--config", str(tmp_path / "explain.toml"), *args]
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT, check=True)
    stages = [s for s in json.loads(out.stdout)["stages"] if s["stage"] == "rcpt"]
    assert stages[0]["route"] == "strict.test -> 10.0.0.5:25, 10.0.0.6:25 (order)"
    assert stages[0]["policy"].startswith("strict.test: tag=6 tempfail=0 reject=4 greylist=on")
    assert stages[0]["action"] == "reject"
    assert stages[1]["route"].startswith("tagme.test -> lmtp:10.0.1.9:24 (order) (one recipient")
    assert stages[1]["policy"] == "tagme.test: tag=2 tempfail=0 reject=15 greylist=off mode=enforce"
    assert stages[2]["route"] == f"default -> 127.0.0.1:{sink.port} (order)"
    assert stages[2]["policy"] == "global: tag=6 tempfail=0 reject=15 greylist=on mode=enforce"
    notes = json.loads(out.stdout)["notes"]
    assert notes == ["<y@nogrey.test> would get 452 4.5.3: another route, policy or LMTP transaction"]
    text = subprocess.run(run, capture_output=True, text=True, timeout=30, cwd=ROOT, check=True).stdout
    assert "  route  strict.test -> 10.0.0.5:25, 10.0.0.6:25 (order)" in text
    assert "  policy tagme.test: tag=2" in text
