"""DMARC aggregate reports end to end: evaluations recorded by a running spamgate (real DNS test
server, real SMTP clients), `spamgate dmarc report` sends the gzip'd XML through a relay (the
sink) to the verified rua only, and a real DMARC report parser (parsedmarc) reads every figure."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate
from tests.harness.mail_auth import auth_zone, send_raw
from tests.harness.proc import ROOT, Spamgate, to_toml
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


def zone(dns: DnsTestServer) -> None:
    auth_zone(dns)
    dns.add("rep.test", "MX", "10 mail.sender.test.")
    dns.add("rep.test", "TXT", "v=spf1 ip4:127.0.0.9 ~all")  # softfail: DMARC decides at DATA
    rua = "mailto:agg@reports.test!10m,mailto:x@unverified.test,mailto:tiny@reports.test!100"
    dns.add("_dmarc.rep.test", "TXT", f"v=DMARC1; p=reject; aspf=r; rua={rua}")
    dns.add("rep.test._report._dmarc.reports.test", "TXT", "v=DMARC1")


def test_aggregate_report_sent_to_verified_rua_and_parsed(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, tmp_path: Path
) -> None:
    zone(dns_server)
    store = {"url": f"sqlite:///{tmp_path}/state.db"}
    sg = start_gate(spamgate_factory, sink, dns_server, {"store": store, "sharing": {"dmarc_record": True}})
    for _ in range(2):
        assert send_raw(sg.port, message("ok", frm="a@rep.test"), mail_from="a@rep.test").get("ok")
    bad = send_raw(
        sg.port, message("spoof", frm="a@rep.test"), mail_from="a@rep.test", source_ip="127.0.0.10"
    )
    assert bad.get("error") == 550
    sg.wait_log("transaction", count=3)
    sg.stop()  # drains the recorder

    cfg = tmp_path / "report.toml"
    cfg.write_text(
        to_toml(
            {
                "server": {"hostname": "mx.receiver.test"},
                "store": store,
                "dns": {"nameservers": [dns_server.address], "timeout": "500ms"},
                "sharing": {
                    "dmarc_relay": f"127.0.0.1:{sink.port}",
                    "dmarc_org_name": "Receiver Org",
                    "dmarc_contact": "dmarc-noreply@receiver.test",
                },
            }
        )
    )
    before = len(sink.messages)
    run = [sys.executable, "-m", "proxy", "dmarc", "report", "--day", "today", "--config", str(cfg)]
    r = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    assert "rep.test: sent to agg@reports.test" in r.stdout
    reports = sink.messages[before:]
    assert len(reports) == 1
    assert reports[0].rcpts == ["agg@reports.test"]  # not unverified.test, not over tiny's 100 bytes
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert "rep.test: already sent" in again.stdout
    assert len(sink.messages) == before + 1

    mail = message_from_bytes(reports[0].data, policy=policy.default)
    assert mail["From"] == "dmarc-noreply@receiver.test"
    assert mail["Subject"].startswith("Report Domain: rep.test Submitter: Receiver Org Report-ID: <")
    (att,) = list(mail.iter_attachments())
    assert att.get_content_type() == "application/gzip"
    assert att.get_filename().startswith("mx.receiver.test!rep.test!")
    gz = att.get_content()
    assert gzip.decompress(gz).startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<feedback>')

    from parsedmarc import parse_aggregate_report_file

    parsed = parse_aggregate_report_file(gz, offline=True)
    meta = parsed["report_metadata"]
    assert meta["org_name"] == "Receiver Org"
    assert meta["org_email"] == "dmarc-noreply@receiver.test"
    pub = parsed["policy_published"]
    assert (pub["domain"], pub["p"], pub["sp"], pub["pct"], pub["adkim"], pub["aspf"]) == (
        "rep.test",
        "reject",
        "reject",
        "100",
        "r",
        "r",
    )
    recs = {rec["source"]["ip_address"]: rec for rec in parsed["records"]}
    assert set(recs) == {"127.0.0.9", "127.0.0.10"}
    good, spoof = recs["127.0.0.9"], recs["127.0.0.10"]
    assert good["count"] == 2
    assert good["policy_evaluated"] == {
        "disposition": "none",
        "dkim": "fail",
        "spf": "pass",
        "policy_override_reasons": [],
    }
    assert good["identifiers"]["header_from"] == "rep.test"
    (spf,) = good["auth_results"]["spf"]
    assert (spf["domain"], spf["scope"], spf["result"]) == ("rep.test", "mfrom", "pass")
    assert good["auth_results"]["dkim"] == []
    assert spoof["count"] == 1
    assert spoof["policy_evaluated"]["disposition"] == "reject"
    assert spoof["policy_evaluated"]["spf"] == "fail"
    assert spoof["auth_results"]["spf"][0]["result"] == "softfail"


def test_schedule_sends_yesterdays_reports_once(
    spamgate_factory: Factory, sink: Sink, tmp_path: Path
) -> None:
    """A running instance with dmarc_send_interval sends the finished day's report by itself,
    once (the store elects one sender); rua in the policy domain's own org needs no TXT check."""
    import asyncio
    import json
    import time

    from proxy.state import build_store
    from proxy.state.config import StoreConfig

    url = f"sqlite:///{tmp_path}/state.db"
    yesterday = int(time.time() // 86400) - 1
    row = {
        "ip": "192.0.2.5",
        "hf": "own.test",
        "ef": "own.test",
        "disp": "none",
        "reason": "",
        "dkim": "pass",
        "spf": "pass",
        "dkim_res": [["own.test", "s1", "pass"]],
        "spf_res": ["own.test", "pass"],
    }

    async def seed() -> None:
        st = build_store(StoreConfig(url=url, timeout=2.0))
        key = f"dmarcagg|{yesterday}|own.test|{json.dumps(row, sort_keys=True, separators=(',', ':'))}"
        for _ in range(3):
            await st.incr(key, 3 * 86400)
        await st.set(
            f"dmarcpol|{yesterday}|own.test", "v=DMARC1; p=none; rua=mailto:d@reports.own.test", 86400
        )
        await st.close()

    asyncio.run(seed())
    sharing = {
        "dmarc_record": True,
        "dmarc_relay": f"127.0.0.1:{sink.port}",
        "dmarc_send_interval": "1s",
    }
    cfg = {"store": {"url": url}, "sharing": sharing}
    spamgate_factory(cfg)
    spamgate_factory(cfg)  # a second instance on the same store: still one report
    deadline = time.monotonic() + 10
    while not sink.messages:
        assert time.monotonic() < deadline, "no report sent"
        time.sleep(0.1)
    time.sleep(2.5)  # both instances ran their schedule at least twice more
    assert [m.rcpts for m in sink.messages] == [["d@reports.own.test"]]
    mail = message_from_bytes(sink.messages[0].data, policy=policy.default)
    (att,) = list(mail.iter_attachments())
    from parsedmarc import parse_aggregate_report_file

    parsed = parse_aggregate_report_file(att.get_content(), offline=True)
    (rec,) = parsed["records"]
    assert rec["count"] == 3
    assert rec["auth_results"]["dkim"][0]["selector"] == "s1"
    # org_name defaults to server.hostname (parsedmarc shortens a domain-like name to its base).
    assert b"<org_name>mx.spamgate.test</org_name>" in gzip.decompress(att.get_content())
