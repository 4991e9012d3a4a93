"""Run a server and one client command in a network namespace of their own, with a DNS world
chosen by the test. Started by :func:`run_isolated` under ``unshare --net --mount`` (root).

Inside, only loopback exists: fixed ports such as the README's 127.0.0.1:2525 are free (no
other test or engineer on the machine can hold them), and no packet can leave the machine.
``/etc/resolv.conf`` is replaced (in this mount namespace only) by one naming 127.0.0.1, where
the chosen world answers:

- ``"none"``: nothing listens on port 53: no DNS is reachable at all;
- ``"nxdomain"``: a resolver that answers NXDOMAIN to every name, as an offline local resolver
  does;
- ``"internet"``: the public facts that matter to mail tests: ``example.org`` publishes a null
  MX (RFC 7505), ``.test`` names do not exist (RFC 2606), localhost has its PTR.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WORLDS = ("none", "nxdomain", "internet")
INTERNET_ZONE: dict[str, dict[str, Any]] = {
    "example.org": {"MX": "0 .", "A": "93.184.215.14", "TXT": "v=spf1 -all"},
    "_dmarc.example.org": {"TXT": "v=DMARC1;p=reject;sp=reject;adkim=s;aspf=s"},
    "1.0.0.127.in-addr.arpa": {"PTR": "localhost."},
    "localhost": {"A": "127.0.0.1"},
}


def run_isolated(
    world: str, server: list[str], client: list[str], cwd: Path, env: dict[str, str], wait_for: str
) -> dict[str, Any]:
    """Run ``server`` (in ``cwd`` with ``env``), wait until ``wait_for`` (host:port) accepts,
    run ``client``, stop the server with SIGTERM. Returns the client's exit code and output,
    the server's output and the files now under ``cwd``."""
    assert world in WORLDS, world
    spec = {"world": world, "server": server, "client": client, "cwd": str(cwd), "env": env, "wait": wait_for}
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, "-m", "tests.harness.isolated", json.dumps(spec)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert r.returncode == 0, f"isolated run failed ({r.returncode}): {r.stdout[-3000:]}{r.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    return result


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _own_resolv_conf(workdir: Path) -> None:
    conf = workdir / ".resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)


def _serve_dns(world: str) -> None:
    from tests.harness.dns_server import DnsTestServer

    zone = DnsTestServer()
    if world == "internet":
        zone.load_zone_dict(INTERNET_ZONE)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))

    def loop() -> None:
        while True:
            data, peer = udp.recvfrom(4096)
            out = zone.answer(data, 1232)
            if out is not None:
                udp.sendto(out, peer)

    threading.Thread(target=loop, daemon=True).start()


def _wait_port(hostport: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    host, _, port = hostport.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {hostport}")


def main(spec: dict[str, Any]) -> dict[str, Any]:
    cwd = Path(spec["cwd"])
    _loopback_up()
    _own_resolv_conf(cwd)
    if spec["world"] != "none":
        _serve_dns(spec["world"])
    log = cwd / ".server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            spec["server"], cwd=cwd, env=spec["env"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(spec["wait"], server)
        client = subprocess.run(
            spec["client"], cwd=cwd, env=spec["env"], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    files = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file())
    return {
        "client_rc": client.returncode,
        "client_out": client.stdout + client.stderr,
        "server_log": log.read_text(errors="replace"),
        "files": files,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
