"""The console pages against one running spamgate: a transaction's explanation, filters,
overview charts, try a message, state (penalty box, greylist, allowlist)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.clients import smtp
from tests.harness.console import VIEWER_PASSWORD, ConsoleClient, console_config
from tests.harness.proc import Spamgate, free_port

MSG = "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def sg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spamgate, int]]:
    tmp: Path = tmp_path_factory.mktemp("console")
    port = free_port()
    cfg: dict[str, Any] = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "store": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "checks": {"reputation": {"penalty_rejects": 2, "exempt_networks": []}},
        **console_config(),
    }
    s = Spamgate(tmp / "sg", cfg).start()
    s.wait_log("admin_listening")
    yield s, port
    s.stop()


@pytest.fixture
def admin(sg: tuple[Spamgate, int]) -> ConsoleClient:
    c = ConsoleClient(sg[1])
    assert c.login() == 303
    return c


def _relay_denied(port: int, ip: str) -> None:
    with smtp(port, source_ip=ip) as s:
        s.ehlo("client.sender.test")
        s.mail("x@sender.test")
        code, _ = s.rcpt("victim@elsewhere.test")
        assert code == 554
        s.rset()


def test_explanation_and_filters(sg: tuple[Spamgate, int], admin: ConsoleClient) -> None:
    server, _ = sg
    _relay_denied(server.port, "127.0.5.1")
    with smtp(server.port, source_ip="127.0.5.2") as s:
        s.ehlo("mail.sender.test")
        s.sendmail("good@sender.test", ["bob@example.test"], MSG)
    rows = admin.wait_rows(1, symbol="RCPT_RELAY_DENIED", ip="127.0.5.1")
    assert len(rows) == 1
    ref = rows[0]["ref"]
    status, page = admin.get(f"/console/tx/{ref}")
    assert status == 200
    assert "RCPT_RELAY_DENIED" in page
    assert "victim@elsewhere.test" in page
    assert "554 5.7.1" in page
    # The same text as `spamgate explain --ref`, descriptions of the symbols included.
    assert f"transaction {ref}" in page
    assert "client_ip         127.0.5.1" in page
    # Filters: the page and the live endpoint agree.
    _, filtered = admin.get("/console/?symbol=RCPT_RELAY_DENIED")
    assert ref in filtered
    assert "good@sender.test" not in filtered
    _, by_sender = admin.get("/console/?sender=good%40sender.test")
    assert "good@sender.test" in by_sender
    assert ref not in by_sender
    assert [r["ref"] for r in admin.history(rcpt="victim@")] == [ref]
    assert admin.history(action="reject", ip="127.0.5.2") == []
    assert admin.get("/console/tx/ffffffff.9")[0] == 404
    # The table rows are links to the explanation.
    assert re.search(rf'href="/console/tx/{re.escape(ref)}"', filtered)


def test_viewer_reads_but_never_writes(sg: tuple[Spamgate, int]) -> None:
    v = ConsoleClient(sg[1])
    assert v.login(VIEWER_PASSWORD) == 303
    assert v.get("/console/")[0] == 200


def test_overview_charts_and_health(sg: tuple[Spamgate, int], admin: ConsoleClient) -> None:
    server, _ = sg
    _relay_denied(server.port, "127.0.6.1")
    with smtp(server.port, source_ip="127.0.6.2") as s:
        s.ehlo("mail.sender.test")
        s.sendmail("news@sender.test", ["bob@example.test"], MSG)
    admin.wait_rows(1, ip="127.0.6.2")
    status, page = admin.get("/console/overview")
    assert status == 200
    assert page.count("<svg") >= 2
    rate = page.split('id="rate"')[1].split("</section>")[0]
    assert "<rect" in rate
    assert "accept" in rate
    symbols = page.split('id="symbols"')[1].split("</section>")[0]
    assert "RCPT_RELAY_DENIED" in symbols
    health = page.split('id="health"')[1].split("</section>")[0]
    assert "store" in health
    assert "ok" in health
    refused = page.split('id="networks"')[1].split("</section>")[0]
    assert "127.0.6.0/24" in refused
    refused_row = admin.history(ip="127.0.6.1")[0]
    assert refused_row["action"] == "reject"
    assert refused_row["would_be"] == "reject"


def test_try_a_message(sg: tuple[Spamgate, int], admin: ConsoleClient) -> None:
    msg = "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: <script>alert('x')</script>\r\n\r\nhi\r\n"
    form = {
        "ip": "192.0.2.20",
        "helo": "localhost",
        "mail_from": "a@sender.test",
        "rcpts": "bob@example.test, victim@elsewhere.test",
        "message": msg,
    }
    status, page = admin.post("/console/try", form, csrf_from="/console/try")
    assert status == 200
    result = page.split('id="try-result"')[1]
    for stage in ("CONNECT", "HELO", "MAIL", "RCPT", "DATA"):
        assert stage in result
    assert "RCPT_RELAY_DENIED" in result
    assert "554 5.7.1 [ref explain] Relay access denied" in result
    assert "HELO_NOT_FQDN" in result
    assert "total score" in result
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    # Without a message, DATA is not evaluated (and the page says so).
    status, page = admin.post("/console/try", {**form, "message": ""}, csrf_from="/console/try")
    assert "DATA checks not evaluated" in page
    status, page = admin.post("/console/try", {**form, "ip": "not-an-ip"}, csrf_from="/console/try")
    assert "not an IP address" in page
    # The viewer role reads, never runs it; no CSRF token, no dry run.
    v = ConsoleClient(sg[1])
    assert v.login(VIEWER_PASSWORD) == 303
    assert v.post("/console/try", form, csrf_from="/console/try")[0] == 403
    assert admin.request("POST", "/console/try", form)[0] == 403
    assert any(x.get("operation") == "try" for x in sg[0].events("console_audit"))


def test_overview_dns_lists_and_downstream(spamgate_factory, sink, dns_server) -> None:  # type: ignore[no-untyped-def]
    """The health cards read the live state: a probed DNS list, a downstream that answers, then not."""
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    port = free_port()
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "metrics": {"listen": f"127.0.0.1:{port}", "readyz_cache": "0s", "readyz_timeout": "1s"},
            "dns": {"nameservers": [dns_server.address], "timeout": "300ms", "retries": 0},
            "checks": {"dnsbl": {"zones": ["bl.test*3"]}},
            **console_config(),
        }
    )
    sg.wait_log("admin_listening")
    c = ConsoleClient(port)
    assert c.login() == 303
    deadline = time.monotonic() + 10
    while True:
        _, page = c.get("/console/overview")
        lists = page.split('id="lists"')[1].split("</section>")[0]
        if "bl.test" in lists or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "bl.test" in lists
    assert "healthy" in lists
    health = page.split('id="health"')[1].split("</section>")[0]
    assert "downstream" in health
    assert "failed" not in health
    sink.stop()
    _, page = c.get("/console/overview")
    health = page.split('id="health"')[1].split("</section>")[0]
    assert "failed" in health
