"""Run spamgate as a real process for a test: its own config file, its own log file.

sg = Spamgate(tmp_path, {"relay": {"downstream": f"127.0.0.1:{sink.port}"}}).start()
... talk SMTP to sg.port ...
sg.transactions()        # parsed "transaction" log lines
sg.stop()                # SIGTERM, waits for exit
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM a server the tests started, SIGKILL it after ``timeout`` seconds, reap it."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def spawn_until_ready(
    name: str, args: list[str], log: Path, ready: Callable[[], bool], timeout: float, interval: float = 0.1
) -> subprocess.Popen[bytes]:
    """Start a server the tests need (its output appended to ``log``) and poll ``ready`` until it
    answers; if it exits or stays silent past ``timeout``, stop it and raise with its log's tail."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            terminate(proc)
            raise RuntimeError(f"{name} did not start ({args[0]}): {log.read_text(errors='replace')[-2000:]}")
        time.sleep(interval)
    return proc


_HELD: list[socket.socket] = []


def dead_port(host: str = "127.0.0.1") -> int:
    """A port where nothing listens and nothing can start listening: bound, never listening,
    held for the whole test session. A connection to it is refused. (A port from
    :func:`free_port` can be taken by the next server a test starts.)"""
    s = socket.socket()
    s.bind((host, 0))
    _HELD.append(s)
    return int(s.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (e.g. in a list of tables: relay.routes)
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    out = (f"[{prefix}]\n" if prefix and lines else "") + "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        out += "\n" + to_toml(v, f"{prefix}.{k}" if prefix else k)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Spamgate:
    def __init__(self, workdir: Path, config: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host)
        self.log_path = self.dir / f"spamgate-{self.port}.log"
        base: dict[str, Any] = {
            "server": {
                "listen": [f"{host}:{self.port}"],
                "hostname": "mx.spamgate.test",
                "drain_timeout": "5s",
            },
            "relay": {
                "maildir": str(self.dir / "mail"),
                "local_domains": ["example.test", "dest.test"],
            },
            "log": {"file": str(self.log_path), "level": "debug"},
            # No DNS unless a test brings its DNS server: a dead port answers nothing.
            "dns": {"nameservers": ["127.0.0.1:1"], "timeout": "200ms", "retries": 0},
            "store": {"url": "memory://"},
            "metrics": {"listen": ""},
            "checks": {"greylist": {"enabled": False}, "reputation": {"penalty_rejects": 0}},
        }
        self.config = deep_merge(base, config or {})
        self.config_path = self.dir / f"spamgate-{self.port}.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminating = False  # terminate() sent SIGTERM; stop() only waits

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
        self.config_path.write_text(to_toml(self.config))

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> Spamgate:
        self.write_config()
        penv = dict(os.environ)
        penv["PYTHONPATH"] = str(ROOT)
        penv.update(env or {})
        self.stderr_path = self.dir / f"spamgate-{self.port}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--config", str(self.config_path)],
                cwd=self.dir,
                env=penv,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if wait:
            try:
                self.wait_log("started", timeout=15)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"spamgate did not start: {self.stderr()}") from None
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("event") == name]

    def transactions(self) -> list[dict[str, Any]]:
        return self.events("transaction")

    def wait_log(
        self, event: str, timeout: float = 10.0, count: int = 1, **match: Any
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(event) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {count}x {event} {match} in log; stderr: {self.stderr()[-2000:]}")
            if self.proc is not None and self.proc.poll() is not None and event != "stopped":
                raise RuntimeError(f"spamgate exited {self.proc.returncode}: {self.stderr()[-3000:]}")
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM without waiting; the next :meth:`stop` waits (several processes drain at once)."""
        if self.proc is not None and self.proc.poll() is None and not self._terminating:
            self.proc.send_signal(signal.SIGTERM)
            self._terminating = True

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            if not self._terminating:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self._terminating = False
        return int(code)
