"""Helpers for the DNS check tests: spamgate wired to the test DNS server, symbol parsing."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.clients import message, smtp
from tests.harness.dns_server import DnsTestServer
from tests.harness.proc import Spamgate, deep_merge
from tests.harness.sink import Sink

_SYM_RE = re.compile(r"^~?([A-Z0-9_]+)\(([-0-9.e]+)\)(?:\{(.*)\})?$")


def start_gate(
    factory: Callable[..., Spamgate],
    sink: Sink,
    dns: DnsTestServer,
    config: dict[str, Any] | None = None,
    *,
    site_rules: str = "",
    host: str = "127.0.0.1",
) -> Spamgate:
    """spamgate relaying to ``sink``, resolving through ``dns``; ``site_rules`` is TOML.

    The zone always has the default sender's domain (``sender.test`` MX) and HELO name
    (``mail.sender.test`` A 127.0.0.1), so that only what a test adds fires symbols."""
    if "sender.test" not in dns.records:
        dns.add("sender.test", "MX", "10 mail.sender.test.")
        dns.add("mail.sender.test", "A", "127.0.0.1")
    base: dict[str, Any] = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "dns": {"nameservers": [dns.address], "timeout": "300ms", "retries": 0},
    }
    cfg = deep_merge(base, config or {})
    sg = factory(cfg, start=False, host=host)
    if ":" in host:  # the harness writes host:port; IPv6 needs brackets
        sg.config["server"]["listen"] = [f"[{host}]:{sg.port}"]
    if site_rules:
        path = Path(sg.dir) / "site-rules.toml"
        path.write_text(site_rules)
        sg.config = deep_merge(sg.config, {"policy": {"site_rules": [str(path)]}})
    return sg.start()


def symbols(line: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """``{"RBL_LISTED": (6.0, "bl.test:127.0.0.2")}`` from a transaction/connection log line."""
    out: dict[str, tuple[float, str]] = {}
    for text in line.get("symbols") or []:
        m = _SYM_RE.match(text)
        assert m, text
        out[m.group(1)] = (float(m.group(2)), m.group(3) or "")
    return out


def send(
    sg: Spamgate,
    source_ip: str = "127.0.0.1",
    helo: str = "mail.sender.test",
    mail_from: str = "alice@sender.test",
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Send one message; return the SMTP outcome and the transaction (or connection) log line."""
    result: dict[str, Any] = {}
    try:
        with smtp(sg.port, source_ip, host=host) as c:
            code, _ = c.ehlo(helo)
            result["ehlo"] = code
            if code != 250:
                result["error"] = code
            else:
                c.sendmail(mail_from, ["bob@example.test"], message("dns", frm=mail_from or "x@y.test"))
                result["ok"] = True
    except smtplib.SMTPConnectError as exc:
        result["error"] = exc.smtp_code
        result["reply"] = exc.smtp_error.decode()
    except smtplib.SMTPSenderRefused as exc:
        result["error"] = exc.smtp_code
        result["reply"] = exc.smtp_error.decode()
    except smtplib.SMTPResponseException as exc:
        result["error"] = exc.smtp_code
        result["reply"] = exc.smtp_error.decode()
    except smtplib.SMTPServerDisconnected:
        result["error"] = "disconnected"
    return result


def last_line(sg: Spamgate, event: str = "transaction", count: int = 1) -> dict[str, Any]:
    return sg.wait_log(event, count=count)[-1]
