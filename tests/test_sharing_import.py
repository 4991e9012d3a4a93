"""Feed import end to end: a peer feed over HTTP from a local http.server (ETag / 304, a broken
update that keeps the last good copy, a format change) and an rbldnsd zone file on disk."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.clients import Raw
from tests.harness.proc import Spamgate

Factory = Callable[..., Spamgate]


class Peer:
    """A tiny feed server: serves ``body`` with an ETag, answers 304 to a matching If-None-Match."""

    def __init__(self) -> None:
        self.body = ""
        self.log: list[tuple[str, int]] = []  # (If-None-Match sent, status answered)
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = peer.body.encode()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                sent = self.headers.get("If-None-Match", "")
                status = 304 if sent == etag else 200
                peer.log.append((sent, status))
                self.send_response(status)
                self.send_header("ETag", etag)
                if status == 200:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status == 200:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        # poll_interval bounds how long close() waits (the default is half a second)
        poll = {"poll_interval": 0.01}
        threading.Thread(target=self.server.serve_forever, kwargs=poll, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def symbols_for(sg: Spamgate, src: str) -> list[str]:
    seen = len(sg.events("connection"))
    c = Raw(sg.port, source_ip=src)
    assert c.reply().startswith("220")
    c.cmd("QUIT")
    c.close()
    return [s for s in sg.wait_log("connection", count=seen + 1)[-1]["symbols"] if s.startswith("FEED")]


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_http_feed_etag_broken_update_and_zone_file(
    peer: Peer, spamgate_factory: Factory, tmp_path: Path
) -> None:
    peer.body = "# peer feed\n127.0.5.1\n127.0.6.0/24 ; a netblock\n"
    zone = tmp_path / "peer.zone"
    zone.write_text("$TTL 300\n:127.0.0.2:listed\n127.0.8 :127.0.0.2:whole /24\n")
    sources = [f"peer=http://127.0.0.1:{peer.port}/feed*5", f"zone={zone}*2.5"]
    sg = spamgate_factory({"checks": {"feeds": {"enabled": True, "sources": sources, "refresh": "1s"}}})

    assert symbols_for(sg, "127.0.5.1") == ["FEED_LISTED(5){peer:127.0.5.1}"]
    assert symbols_for(sg, "127.0.6.9") == ["FEED_LISTED(5){peer:127.0.6.0/24}"]
    assert symbols_for(sg, "127.0.8.3") == ["FEED_LISTED(2.5){zone:127.0.8.0/24}"]
    assert symbols_for(sg, "127.0.7.1") == []

    # Unchanged: the next fetches send the ETag and get 304.
    wait_for(lambda: any(status == 304 and sent for sent, status in peer.log))

    # A broken update: logged with the reason, the last good copy stays in use.
    peer.body = "127.0.5.1\nthis is not an address\n"
    wait_for(lambda: bool(sg.events("feed_invalid")))
    bad = sg.events("feed_invalid")[-1]
    assert bad["feed"] == "peer"
    assert "line 2" in bad["error"]
    assert bad["kept_entries"] == 2
    assert symbols_for(sg, "127.0.6.9") == ["FEED_LISTED(5){peer:127.0.6.0/24}"]

    # A good update in spamgate's JSON format replaces the copy.
    until = int(time.time()) + 3600
    peer.body = json.dumps({"entries": [{"ip": "127.0.7.1", "reason": "TRAP_HIT", "until": until}]})
    wait_for(lambda: any(e["feed"] == "peer" and e["entries"] == 1 for e in sg.events("feed_updated")))
    assert symbols_for(sg, "127.0.7.1") == ["FEED_LISTED(5){peer:127.0.7.1}"]
    assert symbols_for(sg, "127.0.6.9") == []

    # The zone file changes on disk: picked up by size/mtime.
    zone.write_text("127.0.9.9\n")
    wait_for(lambda: sum(1 for e in sg.events("feed_updated") if e["feed"] == "zone") >= 2)
    assert symbols_for(sg, "127.0.9.9") == ["FEED_LISTED(2.5){zone:127.0.9.9}"]
    assert symbols_for(sg, "127.0.8.3") == []


def test_unreachable_feed_at_start_is_logged_not_fatal(spamgate_factory: Factory, tmp_path: Path) -> None:
    sources = [f"gone={tmp_path}/missing.txt", "dead=http://127.0.0.1:1/feed"]
    sg = spamgate_factory({"checks": {"feeds": {"enabled": True, "sources": sources, "timeout": "1s"}}})
    errors = {e["feed"]: e["error"] for e in sg.events("feed_invalid")}
    assert "FileNotFoundError" in errors["gone"]
    assert "fetch failed" in errors["dead"]
    assert symbols_for(sg, "127.0.5.1") == []
