"""deploy/: the install script really installs a working spamgate; manifests parse and carry
the settings the docs promise (hardening, probes, client address preservation)."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import smtplib
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.loader import apply_env, from_dict
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


# Service annotations by which cloud load balancers are told to send a PROXY v1/v2 header
# (AWS, DigitalOcean, Hetzner, OpenStack, Linode, Scaleway, IBM...): every one names it so.
_PROXY_WORDS = ("proxy-protocol", "proxyprotocol", "proxy_protocol")
_OFF = ("", "false", "0", "no", "none", "off", "disabled")


def _sends_proxy(svc: dict[str, Any]) -> bool:
    """A Service whose load balancer prepends a PROXY header: an annotation named for PROXY
    that is not switched off, or one whose value turns the feature on (IBM's enable-features)."""
    for key, value in (svc["metadata"].get("annotations") or {}).items():
        v = str(value).strip().lower()
        if any(w in key.lower() for w in _PROXY_WORDS) and v not in _OFF:
            return True
        if any(w in v for w in _PROXY_WORDS):
            return True
    return False


def _proxy_mismatches(k: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Where the manifests disagree about PROXY: trusted networks without a PROXY-sending
    Service (any host there may forge client addresses), or a PROXY-sending Service without
    trusted networks (its header would be read as an SMTP command)."""
    sends = [name for (kind, name), doc in k.items() if kind == "Service" and _sends_proxy(doc)]
    out = []
    for (kind, name), doc in k.items():
        if kind != "ConfigMap" or "spamgate.toml" not in doc.get("data", {}):
            continue
        trusted = from_dict(tomllib.loads(doc["data"]["spamgate.toml"])).proxy_protocol.trusted_networks
        if trusted and not sends:
            out.append(f"ConfigMap {name} trusts PROXY from {trusted} but no Service sends PROXY")
        if sends and not trusted:
            out.append(f"Services {sends} send PROXY but ConfigMap {name} trusts no network")
    return out


def test_kubernetes_proxy_protocol_trust_matches_the_service() -> None:
    """The shipped ConfigMap trusts PROXY headers from no network, because no shipped Service
    configures a PROXY-sending load balancer; the check itself notices either half missing."""
    k = _k8s()
    assert not any(_sends_proxy(doc) for (kind, _), doc in k.items() if kind == "Service")
    assert _proxy_mismatches(k) == []
    cm = k[("ConfigMap", "spamgate-config")]
    assert from_dict(tomllib.loads(cm["data"]["spamgate.toml"])).proxy_protocol.trusted_networks == []
    # Turning PROXY on in only one of the two files is caught, each way round.
    svc = k[("Service", "spamgate")]
    on = {**svc, "metadata": {**svc["metadata"], "annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*"}}}  # fmt: skip
    assert _sends_proxy(on)
    assert _proxy_mismatches({**k, ("Service", "spamgate"): on})
    toml = cm["data"]["spamgate.toml"].replace("trusted_networks = []", 'trusted_networks = ["10.0.12.0/28"]')
    assert toml != cm["data"]["spamgate.toml"]
    trusting = {**cm, "data": {"spamgate.toml": toml}}
    assert _proxy_mismatches({**k, ("ConfigMap", "spamgate-config"): trusting})
    assert (
        _proxy_mismatches({**k, ("ConfigMap", "spamgate-config"): trusting, ("Service", "spamgate"): on})
        == []
    )
    # The compose file has no balancer in front: its config trusts no PROXY network either.
    compose = from_dict(tomllib.loads((DEPLOY / "spamgate.toml").read_text()))
    assert compose.proxy_protocol.trusted_networks == []


def test_compose_file() -> None:
    """spamgate on 25 in front of Postfix (XCLIENT allowed for spamgate's network) with Redis."""
    (compose,) = _docs(DEPLOY / "docker-compose.yml")
    s = compose["services"]
    assert set(s) == {"spamgate", "postfix", "redis", "clamav", "rspamd"}
    assert "25:25" in s["spamgate"]["ports"]
    assert s["spamgate"]["environment"]["SPAMGATE_DOWNSTREAM"] == "postfix:25"
    assert "redis://redis" in s["spamgate"]["environment"]["SPAMGATE__STORE__URL"]
    assert s["postfix"]["environment"]["POSTFIX_smtpd_authorized_xclient_hosts"]
    from_dict(tomllib.loads((DEPLOY / "spamgate.toml").read_text()))


def test_compose_scanners_profile() -> None:
    """ClamAV and rspamd are optional (the "scanners" profile) and wired to spamgate: the
    addresses in spamgate.toml name the compose services on spamgate's network, and the checks
    are off unless SPAMGATE_SCANNERS=true (without the profile, a fail-closed antivirus that is
    not there would defer all mail)."""
    (compose,) = _docs(DEPLOY / "docker-compose.yml")
    s = compose["services"]
    env = s["spamgate"]["environment"]
    for name, port in (("clamav", 3310), ("rspamd", 11333)):
        assert s[name]["profiles"] == ["scanners"]
        assert set(s[name]["networks"]) & set(s["spamgate"]["networks"])
        assert "profiles" not in s["spamgate"]
        assert env[f"SPAMGATE__CHECKS__{name.upper()}__ENABLED"] == "${SPAMGATE_SCANNERS:-false}"
        cfg = from_dict(tomllib.loads((DEPLOY / "spamgate.toml").read_text()))
        opts = cfg.checks[name]
        assert opts.address == f"{name}:{port}"
        assert opts.enabled is False
    assert cfg.checks["clamav"].on_error == "tempfail"
    for value in ("true", "false"):  # what compose gives for ${SPAMGATE_SCANNERS:-false}
        data = tomllib.loads((DEPLOY / "spamgate.toml").read_text())
        apply_env(data, {k: v.replace("${SPAMGATE_SCANNERS:-false}", value) for k, v in env.items()})
        cfg = from_dict(data)
        assert cfg.checks["clamav"].enabled is cfg.checks["rspamd"].enabled is (value == "true")


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


# Runs as root in a private mount namespace: what ProtectSystem=strict does to the unit's view
# of the file system. /var/lib and /var/log become private tmpfs (nothing of the host is
# written), the unit's writable directories are created there (as systemd creates
# StateDirectory=/LogsDirectory=) and stay writable; everything else is read-only.
_UNIT_SANDBOX = r"""
set -eu
workdir=$1; shift
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=0755 tmpfs /var/log
for d in $SANDBOX_WRITABLE; do mkdir -p "$d"; mount --bind "$d" "$d"; done
mount -o remount,bind,ro /var/lib
mount -o remount,bind,ro /var/log
mount -o remount,bind,ro /
if touch /var/probe 2>/dev/null; then echo "root is writable"; exit 3; fi
cd "$workdir"
"$@" 1>&2 &
pid=$!
echo "PID $pid"
wait "$pid" || true
for d in $SANDBOX_WRITABLE; do find "$d" -type f; done
"""


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for key, value in re.findall(r"^(\w+)=(.*)$", (DEPLOY / "spamgate.service").read_text(), re.M):
        keys.setdefault(key, []).append(value.strip())
    return keys


@pytest.mark.slow
def test_systemd_unit_keeps_default_state_in_its_state_directory(tmp_path: Path) -> None:
    """Started as the unit starts it (its WorkingDirectory=, else /) under a read-only root
    with only its StateDirectory=/LogsDirectory=/ReadWritePaths= writable, spamgate with a
    config that leaves store.url and relay.maildir at their relative defaults delivers a
    message (250) and keeps the SQLite store and the Maildir inside /var/lib/spamgate; no
    store error is logged."""
    keys = _unit_keys()
    assert keys["ProtectSystem"] == ["strict"]
    assert keys["StateDirectory"] == ["spamgate"]
    writable = {f"/var/lib/{d}" for v in keys["StateDirectory"] for d in v.split()}
    writable |= {f"/var/log/{d}" for v in keys.get("LogsDirectory", []) for d in v.split()}
    writable |= {d for v in keys.get("ReadWritePaths", []) for d in v.split()}
    assert all(d.startswith(("/var/lib/", "/var/log/")) for d in writable), writable
    workdir = keys.get("WorkingDirectory", ["/"])[-1]

    port = free_port()
    config = tmp_path / "spamgate.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = "200ms"\n'
        '[metrics]\nlisten = ""\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGATE")}
    env.update(PYTHONPATH=str(ROOT), SANDBOX_WRITABLE=" ".join(sorted(writable)))
    for item in keys.get("Environment", []):
        name, _, value = item.partition("=")
        env[name] = value
    argv = [sys.executable, "-m", "proxy", "run", "--config", str(config)]
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", _UNIT_SANDBOX, "sandbox", workdir, *argv],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("PID "), first + proc.communicate(timeout=10)[1]
        wait_port("127.0.0.1", port, timeout=20)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("client.example.test")
            c.mail("alice@example.test")
            c.rcpt("bob@example.test")
            code, reply = c.data(b"Subject: under ProtectSystem=strict\r\n\r\nhi\r\n")
        os.kill(int(first.split()[1]), signal.SIGTERM)
        out, log = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 250, (reply, log[-3000:])
    assert "store_error" not in log, log[-3000:]
    files = out.split()
    assert [f for f in files if f.startswith("/var/lib/spamgate/") and f.endswith("/state.db")], files
    assert [f for f in files if "/bob@example.test/new/" in f], files


def test_dockerfile_uses_install_script() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#")
    assert "FROM python:3.11-slim" in text
    assert "sh /src/deploy/install.sh" in text
    assert re.search(r"^USER spamgate$", text, re.M)
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert "SPAMGATE_SETCAP=1" in text
    # State in a volume, which is also the working directory (relative paths land there), and
    # install.sh writes it into the image's config as absolute paths.
    assert re.search(r'^VOLUME \["/var/lib/spamgate"\]$', text, re.M)
    assert re.search(r"^WORKDIR /var/lib/spamgate$", text, re.M)
    assert "STATE_DIR=/var/lib/spamgate" in text
    # Everything the package build reads (tests/test_packaging.py builds a wheel from the same).
    copied = " ".join(re.findall(r"^COPY (.*) /src/", text, re.M))
    for name in ("pyproject.toml", "setup.py", "README.md", "proxy", "rules"):
        assert name in copied.split(), name


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
    # State paths are absolute: the installed service does not depend on its working directory.
    written = tomllib.loads(config.read_text())
    assert written["store"]["url"] == f"sqlite:///{state}/state.db"
    assert written["relay"]["maildir"] == f"{state}/mail"
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
    assert (state / "state.db").is_file()
    assert not (tmp_path / "var").exists()  # nothing relative to the working directory


def test_logrotate_config_signals_reopen() -> None:
    """The shipped logrotate file renames (no copytruncate, which loses lines) and then sends
    SIGUSR1 to the main process, which reopens the log file (tests/test_logrotate.py)."""
    text = (DEPLOY / "spamgate.logrotate").read_text()
    assert "copytruncate" not in re.sub(r"#.*", "", text)
    post = re.search(r"postrotate\n(.*?)\n\s*endscript", text, re.S)
    assert post is not None
    assert "--signal=USR1" in post.group(1)
    assert "--kill-whom=main" in post.group(1)
    assert "spamgate.service" in post.group(1)
