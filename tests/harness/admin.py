"""Helpers for the admin listener: HTTP GET on loopback and Prometheus text parsing."""

from __future__ import annotations

import http.client
import time


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[str, float]:
    """``{'name{a="x",b="y"}': value}`` with labels sorted as the exposition writes them."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (labels matched as a subset); 0.0 if absent."""
    total = 0.0
    for key, value in samples(text).items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def wait_sample(port: int, name: str, want: float, timeout: float = 10.0, **labels: str) -> str:
    """Scrape until ``name{labels}`` reaches ``want``; returns the last body."""
    deadline = time.monotonic() + timeout
    while True:
        _, body = get(port, "/metrics")
        if sample(body, name, **labels) >= want or time.monotonic() > deadline:
            return body
        time.sleep(0.05)
