"""A console client for tests: HTTP on loopback with a cookie jar, login, CSRF-carrying forms."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from functools import cache
from typing import Any

from proxy.console.passwords import hash_password

ADMIN_PASSWORD = "admin-secret-1"
VIEWER_PASSWORD = "viewer-secret-1"


@cache
def hashes() -> tuple[str, str]:
    return hash_password(ADMIN_PASSWORD), hash_password(VIEWER_PASSWORD)


def console_config() -> dict[str, Any]:
    admin, viewer = hashes()
    return {
        "console": {"admin_password_hash": admin, "viewer_password_hash": viewer, "history_flush": "100ms"}
    }


class ConsoleClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.last_headers: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {}
        body = None
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
            self.last_headers = {k.lower(): v for k, v in resp.getheaders()}
            self.set_cookies = resp.msg.get_all("Set-Cookie") or []
            for c in self.set_cookies:
                name, _, rest = c.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in c:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            return resp.status, text
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, str]:
        return self.request("GET", path)

    def csrf(self, page: str = "/console/") -> str:
        _, text = self.get(page)
        m = re.search(r'name="csrf" value="([^"]+)"', text)
        assert m, text[:500]
        return m.group(1)

    def post(self, path: str, form: dict[str, str], csrf_from: str = "/console/") -> tuple[int, str]:
        return self.request("POST", path, {**form, "csrf": self.csrf(csrf_from)})

    def login(self, password: str = ADMIN_PASSWORD) -> int:
        token = self.csrf("/console/login")
        status, _ = self.request("POST", "/console/login", {"csrf": token, "password": password})
        return status

    def history(self, **filters: str) -> list[dict[str, Any]]:
        status, text = self.get("/console/api/history?" + urllib.parse.urlencode(filters))
        assert status == 200, text
        rows: list[dict[str, Any]] = json.loads(text)
        return rows

    def wait_rows(self, n: int, timeout: float = 10.0, **filters: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.history(**filters)
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)
