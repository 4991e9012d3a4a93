"""``spamgate explain``: the dry-run verdict of an envelope, and a past ref found in the log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness.clients import smtp
from tests.harness.dns_server import DnsTestServer
from tests.harness.proc import ROOT, Spamgate, deep_merge, to_toml
from tests.harness.sink import Sink

CONFIG: dict[str, Any] = {
    "relay": {"local_domains": ["example.test"]},
    "checks": {"static_lists": {"block": ["192.0.2.0/24"]}},
    "dns": {"nameservers": ["127.0.0.1:1"], "timeout": "200ms", "retries": 0},
    "store": {"url": "memory://"},
    "metrics": {"listen": ""},
}


def explain(
    tmp_path: Path, *args: str, config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "explain.toml"
    cfg.write_text(to_toml(config or CONFIG))
    return subprocess.run(
        [sys.executable, "-m", "proxy", "explain", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


FULL_MSG = (
    "From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n"
    "Date: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <2@sender.test>\r\n\r\nhi\r\n"
)


def envelope(ip: str, rcpt: str = "bob@example.test") -> list[str]:
    return ["--ip", ip, "--helo", "mail.sender.test", "--from", "alice@sender.test", "--rcpt", rcpt]


def test_blocklisted_ip_is_refused_at_connect(tmp_path: Path) -> None:
    """A client on the static blocklist: rejected at connect with the configured reply."""
    r = explain(tmp_path, *envelope("192.0.2.7"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "reject"
    assert out["stopped_at"] == "connect"
    assert out["reply"] == "554 5.7.1 [ref explain] Client address blocked by local policy"
    assert [s["stage"] for s in out["stages"]] == ["connect"]
    # (DNS checks run too; with no DNS server they add weight-0 *_TEMPERROR symbols.)
    (hit,) = [h for h in out["stages"][0]["symbols"] if h["symbol"] == "IP_BLOCKLISTED"]
    assert hit["symbol"] == "IP_BLOCKLISTED"
    assert hit["evidence"] == "192.0.2.0/24"
    assert hit["score"] == 100
    assert hit["description"] == "The client address is on the local blocklist."
    text = explain(tmp_path, *envelope("192.0.2.7"))
    assert "IP_BLOCKLISTED" in text.stdout
    assert "{192.0.2.0/24}" in text.stdout
    assert "reply: 554 5.7.1 [ref explain] Client address blocked by local policy" in text.stdout
    assert "fix: Ask the receiving site's postmaster" in text.stdout


def test_relay_denied_recipient(tmp_path: Path) -> None:
    """A recipient outside our domains: refused at RCPT with 554 5.7.1 relay denied."""
    r = explain(tmp_path, *envelope("203.0.113.5", "victim@elsewhere.test"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["stopped_at"] == "rcpt"
    assert out["action"] == "reject"
    assert out["reply"] == "554 5.7.1 [ref explain] Relay access denied"
    rcpt = out["stages"][-1]
    assert rcpt["rcpt"] == "victim@elsewhere.test"
    assert rcpt["cause"] == "RCPT_RELAY_DENIED"
    assert rcpt["symbols"][0]["evidence"] == "elsewhere.test"


def test_clean_envelope_with_message(tmp_path: Path) -> None:
    """A clean client, sender, recipient and message: accepted, every stage run, no refusal."""
    eml = tmp_path / "m.eml"
    eml.write_text(
        "From: alice@sender.test\nTo: bob@example.test\nSubject: hello\n"
        "Date: Sun, 29 Nov 2026 01:00:00 +0000\nMessage-ID: <1@sender.test>\n\nhi\n"
    )
    r = explain(tmp_path, *envelope("203.0.113.5"), "--message", str(eml), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "accept"
    assert out["reply"] is None
    assert out["stopped_at"] is None
    assert out["data_evaluated"] is True
    assert [s["stage"] for s in out["stages"]] == ["connect", "helo", "mail", "rcpt", "data"]
    assert out["score"] == 0
    text = explain(tmp_path, *envelope("203.0.113.5"), "--message", str(eml))
    assert "action: accept" in text.stdout
    assert "reply: 250" in text.stdout


def test_null_sender(tmp_path: Path) -> None:
    """--from '' is the null reverse-path of bounces, not a missing argument."""
    r = explain(tmp_path, "--ip", "203.0.113.5", "--helo", "mx.sender.test", "--from", "", "--rcpt",
                "bob@example.test", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mail_from"] == ""


def test_missing_arguments_is_an_error(tmp_path: Path) -> None:
    r = explain(tmp_path, "--ip", "203.0.113.5")
    assert r.returncode == 2
    assert "--ref" in r.stderr


def test_ref_finds_a_past_transaction(tmp_path: Path, sink: Sink, spamgate_factory) -> None:
    """A real spamgate logs a transaction; explain --ref finds it in the configured log file."""
    sg: Spamgate = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    with smtp(sg.port, source_ip="127.0.0.9") as c:
        c.ehlo("mail.sender.test")
        c.sendmail("alice@sender.test", ["bob@example.test"], FULL_MSG)
    (txn,) = sg.wait_log("transaction")
    sg.wait_log("connection")
    ref = txn["ref"]
    r = subprocess.run(
        [sys.executable, "-m", "proxy", "explain", "--config", str(sg.config_path), "--ref", ref],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"transaction {ref} at ")
    assert "client_ip         127.0.0.9" in r.stdout
    assert "outcome           delivered" in r.stdout
    assert "rcpt              <bob@example.test> -> 250" in r.stdout
    # The connection id finds the connection line and its transaction; --log overrides log.file.
    conn_id = ref.split(".")[0]
    r = explain(tmp_path, "--ref", conn_id, "--log", str(sg.log_path), "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(x)["event"] for x in r.stdout.splitlines()]
    assert sorted(events) == ["connection", "transaction"]
    r = explain(tmp_path, "--ref", "deadbeef.1", "--log", str(sg.log_path))
    assert r.returncode == 1
    assert "no log line" in r.stderr


def test_dns_checks_use_the_configured_resolver(tmp_path: Path, dns_server: DnsTestServer) -> None:
    """explain resolves through [dns]: a client listed on a DNS list shows RBL_LISTED with the
    list's answer as evidence, and the DNS server saw the query."""
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")  # the list's health probe
    dns_server.add("9.113.0.203.bl.test", "A", "127.0.0.4")
    cfg = deep_merge(
        CONFIG,
        {
            "dns": {"nameservers": [dns_server.address], "timeout": "500ms"},
            "checks": {"dnsbl": {"zones": ["bl.test*4"]}},
        },
    )
    r = explain(tmp_path, *envelope("203.0.113.9"), "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    hits = {h["symbol"]: h for h in out["stages"][0]["symbols"]}
    assert hits["RBL_LISTED"]["score"] == 4
    assert "bl.test" in hits["RBL_LISTED"]["evidence"]
    assert dns_server.count("9.113.0.203.bl.test", "A") >= 1


def test_content_checks_explained(tmp_path: Path, dns_server: DnsTestServer) -> None:
    """explain runs the content checks on --message: a link to a domain on a URI list and an
    attached program show their symbols, and the program's forced reject with its reply."""
    dns_server.add("sender.test", "MX", "10 mail.sender.test.")  # the sender domain exists
    dns_server.add("test.uri.test", "A", "127.0.0.2")  # the list's RFC 5782 probe entry
    dns_server.add("evil.example.uri.test", "A", "127.0.0.2")
    cfg = deep_merge(
        CONFIG,
        {
            "dns": {"nameservers": [dns_server.address], "timeout": "500ms"},
            "checks": {"uribl": {"zones": ["uri.test*4"]}, "greylist": {"enabled": False}},
        },
    )
    eml = tmp_path / "m.eml"
    eml.write_text(
        "From: alice@sender.test\nTo: bob@example.test\nSubject: invoice\n"
        "Date: Sun, 29 Nov 2026 01:00:00 +0000\nMessage-ID: <9@sender.test>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nPay at https://www.evil.example/pay\n"
        '--b\nContent-Type: application/octet-stream; name="invoice.exe"\n'
        "Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--b--\n"
    )
    r = explain(tmp_path, *envelope("203.0.113.5"), "--message", str(eml), "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    data = out["stages"][-1]
    hits = {h["symbol"]: h for h in data["symbols"]}
    assert hits["URIBL_LISTED"]["evidence"] == "uri.test:evil.example"
    assert hits["URIBL_LISTED"]["score"] == 4
    assert hits["ATTACH_BAD_EXTENSION"]["evidence"] == "invoice.exe"
    assert hits["ATTACH_EXECUTABLE"]["check"] == "attachments"
    assert data["cause"] == "ATTACH_BAD_EXTENSION"
    assert out["reply"] == "554 5.7.1 [ref explain] Message refused: attachment type not allowed"
    text = explain(tmp_path, *envelope("203.0.113.5"), "--message", str(eml), config=cfg)
    assert "ATTACH_BAD_EXTENSION" in text.stdout
    assert "fix: Do not e-mail programs" in text.stdout
