"""deploy/: the install script really installs a working spamgate; manifests parse and carry
the settings the docs promise (hardening, probes, client address preservation)."""

from __future__ import annotations

import ipaddress
import os
import re
import smtplib
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.loader import from_dict
from tests.harness.admin import get
from tests.harness.proc import ROOT, free_port, wait_port
from tests.harness.sink import Sink

DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_kubernetes_manifests() -> None:
    """Deployment with probes on /readyz and /healthz, a Service keeping the client address,
    a ConfigMap whose spamgate.toml is a valid configuration, an HPA and Redis as the store."""
    k = _k8s()
    dep = k[("Deployment", "spamgate")]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    svc = k[("Service", "spamgate")]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert svc["spec"]["ports"][0]["port"] == 25
    hpa = k[("HorizontalPodAutoscaler", "spamgate")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "spamgate"
    assert ("Deployment", "spamgate-redis") in k
    assert ("Service", "spamgate-redis") in k
    toml = tomllib.loads(k[("ConfigMap", "spamgate-config")]["data"]["spamgate.toml"])
    cfg = from_dict(toml)
    assert cfg.store.url == "redis://spamgate-redis:6379/0"
    assert cfg.metrics.listen == "0.0.0.0:9325"


def test_compose_file() -> None:
    """spamgate on 25 in front of Postfix (XCLIENT allowed for spamgate's network) with Redis."""
    (compose,) = _docs(DEPLOY / "docker-compose.yml")
    s = compose["services"]
    assert set(s) == {"spamgate", "postfix", "redis"}
    assert "25:25" in s["spamgate"]["ports"]
    assert s["spamgate"]["environment"]["SPAMGATE_DOWNSTREAM"] == "postfix:25"
    assert "redis://redis" in s["spamgate"]["environment"]["SPAMGATE__STORE__URL"]
    assert s["postfix"]["environment"]["POSTFIX_smtpd_authorized_xclient_hosts"]
    from_dict(tomllib.loads((DEPLOY / "spamgate.toml").read_text()))


def test_compose_downstream_never_trusts_spamgate_by_address() -> None:
    """Postfix's mynetworks holds none of spamgate's addresses (a session whose XCLIENT was
    refused or not offered would otherwise relay anywhere), and spamgate requires XCLIENT."""
    (compose,) = _docs(DEPLOY / "docker-compose.yml")
    env = compose["services"]["postfix"]["environment"]
    (ipam,) = compose["networks"]["mail"]["ipam"]["config"]
    spamgate_net = ipaddress.ip_network(ipam["subnet"])
    trusted = [ipaddress.ip_network(n) for n in re.split(r"[\s,]+", env["POSTFIX_mynetworks"]) if n]
    assert trusted
    assert not any(n.overlaps(spamgate_net) for n in trusted), trusted
    assert ipaddress.ip_network(env["POSTFIX_smtpd_authorized_xclient_hosts"]).overlaps(spamgate_net)
    cfg = from_dict(tomllib.loads((DEPLOY / "spamgate.toml").read_text()))
    assert cfg.relay.xclient
    assert cfg.relay.xclient_mode == "required"


def test_systemd_unit_hardening() -> None:
    unit = (DEPLOY / "spamgate.service").read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert keys["NoNewPrivileges"] == "yes"
    assert keys["ProtectSystem"] == "strict"
    assert keys["PrivateTmp"] == "yes"
    assert keys["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert keys["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert "/var/lib/spamgate" in keys["ReadWritePaths"]
    assert keys["User"] == "spamgate"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    for key in ("ProtectHome", "PrivateDevices", "RestrictAddressFamilies", "SystemCallFilter"):
        assert key in keys


def test_dockerfile_uses_install_script() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#")
    assert "FROM python:3.11-slim" in text
    assert "sh /src/deploy/install.sh" in text
    assert re.search(r"^USER spamgate$", text, re.M)
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert "SPAMGATE_SETCAP=1" in text


@pytest.mark.slow
def test_install_script_installs_a_working_spamgate(tmp_path: Path, sink: Sink) -> None:
    """deploy/install.sh into a temporary prefix; the installed spamgate (not this checkout)
    starts from the written config plus environment overrides and relays a message."""
    prefix, etc, state = tmp_path / "opt", tmp_path / "etc", tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SPAMGATE")}
    env.update(
        PREFIX=str(prefix), CONFIG_DIR=str(etc), STATE_DIR=str(state), PYTHON=sys.executable,
        SPAMGATE_SRC=str(ROOT),
    )  # fmt: skip
    r = subprocess.run(
        ["sh", str(DEPLOY / "install.sh")], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    config = etc / "spamgate.toml"
    assert config.exists()
    where = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import proxy; print(proxy.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(prefix))
    port, admin = free_port(), free_port()
    env.update(
        SPAMGATE_LISTEN=f"127.0.0.1:{port}",
        SPAMGATE_DOWNSTREAM=f"127.0.0.1:{sink.port}",
        SPAMGATE_LOCAL_DOMAINS="example.test",
        SPAMGATE__METRICS__LISTEN=f"127.0.0.1:{admin}",
        SPAMGATE__DNS__NAMESERVERS='["127.0.0.1:1"]',
    )
    with open(tmp_path / "out.log", "wb") as out:
        proc = subprocess.Popen(
            [str(prefix / "bin" / "spamgate"), "run", "--config", str(config)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_port("127.0.0.1", port, timeout=20)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.sendmail("alice@sender.test", ["bob@example.test"], "Subject: installed\r\n\r\nhi\r\n")
        assert len(sink.state.messages) == 1
        assert sink.state.messages[0].rcpts == ["bob@example.test"]
        wait_port("127.0.0.1", admin, timeout=5)
        assert get(admin, "/healthz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert '"event":"transaction"' in (tmp_path / "out.log").read_text()
