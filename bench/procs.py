"""Process control of the benchmark: smtp-sink, HAProxy, the spamgate instances and W5's DNS server.

Every peer listens on a fixed local port (``PORTS``); ``peer_port``/``peer_owner`` say where a
workload sends its load and whose process tree pays for it (``direct`` is the sink itself).
The ``start_*`` functions put what they start into the caller's ``procs`` dict; the caller stops
them all (``Proc.stop``), even when a later start fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "bench" / "spamgate-bench.toml"
SPAMGATE = ROOT / ".venv" / "bin" / "spamgate"
PORTS = {"sink": 20600, "haproxy": 20601, "spamgate": 20602, "spamgate_metrics": 20603, "spamgate_dns": 20605}
ADMIN_PORT = 20604
# HAProxy needs two descriptors per relayed connection; containers often cap RLIMIT_NOFILE at
# 20000 (hard), so its idle test stops below that.
HAPROXY_MAXCONN = 9000
SPAMGATES = ("spamgate", "spamgate_metrics", "spamgate_dns")


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Proc:
    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=log.parent
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.log.close()


def peer_port(peer: str) -> int:
    """The port a workload connects to for ``peer`` (``direct``: the sink's)."""
    return PORTS["sink"] if peer == "direct" else PORTS[peer]


def peer_owner(procs: dict[str, Proc], peer: str) -> Proc:
    """The process whose tree does the work of ``peer`` (``direct``: the sink)."""
    return procs["sink"] if peer == "direct" else procs[peer]


def wait_banner(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no SMTP banner on port {port}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def start_dns() -> Any:
    """The local authoritative DNS server of W5 with the zone smtp-source's traffic needs."""
    sys.path.insert(0, str(ROOT))
    from tests.harness.dns_server import DnsTestServer

    dns = DnsTestServer().start()
    dns.add("bench.test", "MX", "10 bench.test.")
    dns.add("bench.test", "A", "127.0.0.1")  # HELO bench.test resolves to the client
    dns.add("1.0.0.127.in-addr.arpa", "PTR", "bench.test.")  # forward-confirmed rDNS
    dns.add("2.0.0.127.bl.bench.test", "A", "127.0.0.2")  # the DNSBL health probe
    dns.add("bench.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add("_dmarc.bench.test", "TXT", "v=DMARC1; p=none")
    return dns


def dns_env(dns: Any) -> dict[str, str]:
    """spamgate's environment for W5: every DNS and authentication check on, against ``dns``."""
    env = {
        "SPAMGATE__DNS__NAMESERVERS": f'["{dns.address}"]',
        "SPAMGATE__DNS__TIMEOUT": "1s",
        "SPAMGATE__CHECKS__DNSBL__ZONES": '["bl.bench.test*3"]',
        "SPAMGATE__CHECKS__RHSBL__ZONES": '["dbl.bench.test*3"]',
    }
    for check in (
        "DNSBL",
        "RDNS",
        "HELO_DNS",
        "SENDER_DOMAIN",
        "RHSBL",
        "SPF",
        "DKIM",
        "ARC",
        "DMARC",
        "AUTH_RESULTS",
    ):
        env[f"SPAMGATE__CHECKS__{check}__ENABLED"] = "true"
    return env


def check_ports_free() -> None:
    busy = [p for p in [*PORTS.values(), ADMIN_PORT] if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy} (a previous run still going?)")


def start_sink(rundir: Path, idle_conns: int, procs: dict[str, Proc]) -> None:
    """smtp-sink on ``PORTS['sink']``, with room for ``idle_conns`` connections (W6)."""
    sink_cmd = [sbin("smtp-sink"), "-C", "-m", str(max(4000, idle_conns + 1000)), "-c"]
    if os.getuid() == 0:
        sink_cmd[1:1] = ["-u", "root"]
    procs["sink"] = Proc("sink", [*sink_cmd, f"127.0.0.1:{PORTS['sink']}", "4096"], rundir / "sink.log")
    wait_banner(PORTS["sink"])


def start_haproxy(rundir: Path, procs: dict[str, Proc]) -> None:
    """HAProxy in TCP mode in front of the sink (does not wait for its banner)."""
    haproxy_cfg = rundir / "haproxy.cfg"
    haproxy_cfg.write_text(
        f"""global
    maxconn {HAPROXY_MAXCONN}
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend smtp
    bind 127.0.0.1:{PORTS["haproxy"]}
    default_backend sink
backend sink
    server sink 127.0.0.1:{PORTS["sink"]}
"""
    )
    procs["haproxy"] = Proc(
        "haproxy", [sbin("haproxy"), "-db", "-f", str(haproxy_cfg)], rundir / "haproxy.log"
    )


def spamgate_env(name: str, dns: Any) -> dict[str, str]:
    """The environment of the spamgate instance ``name`` (one of ``SPAMGATES``)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if name == "spamgate_metrics":
        env["SPAMGATE__METRICS__LISTEN"] = f"127.0.0.1:{ADMIN_PORT}"
    if name == "spamgate_dns":
        env.update(dns_env(dns))
    return env


def start_spamgate(
    rundir: Path, name: str, procs: dict[str, Proc], env: dict[str, str], config: Path = CONFIG
) -> None:
    """spamgate with ``config`` on ``PORTS[name]`` in front of the sink (no wait)."""
    cmd = [
        str(SPAMGATE), "run", "--config", str(config),
        "--listen", f"127.0.0.1:{PORTS[name]}", "--downstream", f"127.0.0.1:{PORTS['sink']}",
    ]  # fmt: skip
    procs[name] = Proc(name, cmd, rundir / f"{name}.log", env=env)


def start_all(rundir: Path, idle_conns: int, procs: dict[str, Proc], dns: Any) -> None:
    """Start the sink and the peers into ``procs`` (the caller stops them, even on failure)."""
    check_ports_free()
    start_sink(rundir, idle_conns, procs)
    start_haproxy(rundir, procs)
    for name in SPAMGATES:
        start_spamgate(rundir, name, procs, spamgate_env(name, dns))
    for name in ("haproxy", *SPAMGATES):
        wait_banner(PORTS[name])
    time.sleep(1.0)
