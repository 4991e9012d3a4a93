"""deploy/grafana: the dashboard JSON and the Prometheus alert rules are well formed, and every
metric they use is exported by the /metrics of a running spamgate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import yaml

from tests.harness.admin import get, wait_sample
from tests.harness.clients import smtp
from tests.harness.proc import ROOT, free_port
from tests.harness.sink import Sink

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "spamgate-dashboard.json"
ALERTS = GRAFANA / "spamgate-alerts.yml"
METRIC = re.compile(r"\b(spamgate_[a-z0-9_]+)")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _exprs() -> list[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        exprs += [r["expr"] for r in group["rules"]]
    return exprs


def test_dashboard_is_well_formed() -> None:
    d = _dashboard()
    assert d["uid"]
    assert d["title"]
    assert d["schemaVersion"] >= 30
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    panels = [p for p in d["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
            assert t["expr"].count("(") == t["expr"].count(")")
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "action",
        "stage",
        "symbols",
        "dns latency",
        "list health",
        "downstream latency",
        "downstream errors",
        "store errors",
        "event-loop lag",
        "instance",
    ):
        assert topic in titles, topic
    # Fleet-wide and per instance.
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert any("by (instance" in e for e in exprs)
    assert any(e.startswith("sum by (action)") for e in exprs)


def test_alert_rules_are_well_formed() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "SpamgateDownstreamDown",
        "SpamgateDnsListsFailing",
        "SpamgateStoreDown",
        "SpamgateRejectRatioJump",
    } <= names
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", r["for"])
    # promtool (Debian's prometheus package) parses the expressions as Prometheus does.
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_used_is_exported(sink: Sink, spamgate_factory) -> None:
    port = free_port()
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "metrics": {"listen": f"127.0.0.1:{port}"}}
    )
    sg.wait_log("admin_listening")
    with smtp(sg.port) as c:
        c.ehlo("mail.sender.test")
        c.sendmail("a@sender.test", ["bob@example.test"], "Subject: x\r\n\r\nhi\r\n")
    wait_sample(port, "spamgate_transactions_total", 1)
    _, body = get(port, "/metrics")
    exported: set[str] = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exported.add(name)
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ())
            exported.update(name + s for s in suffixes)
    used = {m for e in _exprs() for m in METRIC.findall(e)}
    assert used, "no metric found in the expressions"
    missing = sorted(used - exported)
    assert missing == [], f"used by the dashboard or alerts, not in /metrics: {missing}"
