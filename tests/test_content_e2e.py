"""Content checks end to end: real SMTP sessions through spamgate, URI lists on the test DNS server.

Zone layout (``uribl.test`` a URI list, ``all.test`` a list that answers everything):
  test.uribl.test          A 127.0.0.2   RFC 5782 probe entry every healthy domain list lists
  evil.example.uribl.test  A 127.0.0.2   the domain evil.example is listed
  4.4.8.8.uribl.test       A 127.0.0.4   the address 8.8.4.4 is listed
  (invalid.uribl.test: NXDOMAIN, as RFC 5782 wants)
  test.all.test / invalid.all.test A 127.0.0.2   a broken list: its probe disables it
"""

from __future__ import annotations

import base64
import io
import smtplib
import struct
import time
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clients import smtp
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate, symbols
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
PE = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(120)
URIBL = {"uribl": {"zones": ["uribl.test*3"]}}


def uri_zone(dns: DnsTestServer) -> None:
    dns.add("test.uribl.test", "A", "127.0.0.2")
    dns.add("evil.example.uribl.test", "A", "127.0.0.2")
    dns.add("4.4.8.8.uribl.test", "A", "127.0.0.4")


def mail(body: str, content_type: str = "text/plain", subject: str = "content") -> bytes:
    head = (
        f"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@sender.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
    )
    return (head + body).encode()


def with_attachment(
    name: str, data: bytes, ctype: str = "application/octet-stream", text: str = "hi"
) -> bytes:
    b64 = base64.encodebytes(data).decode().replace("\n", "\r\n")
    body = (
        f"--b1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        f'--b1\r\nContent-Type: {ctype}; name="{name}"\r\nContent-Disposition: attachment; '
        f'filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}--b1--\r\n'
    )
    return mail(body, 'multipart/mixed; boundary="b1"', subject=name.replace(".", "-"))


def zip_of(members: dict[str, bytes], encrypted: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    out = bytearray(buf.getvalue())
    if encrypted:  # the encrypted flag (bit 0) in the local header and the central directory
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = out.find(sig)
            struct.pack_into("<H", out, pos + offset, struct.unpack_from("<H", out, pos + offset)[0] | 1)
    return bytes(out)


def send(sg: Spamgate, msg: bytes, ip: str) -> dict[str, Any]:
    """Send one message from ``ip``; the outcome and how long the end of DATA took."""
    out: dict[str, Any] = {}
    with smtp(sg.port, ip) as c:
        c.ehlo("mail.sender.test")
        t0 = time.monotonic()
        try:
            c.sendmail("alice@sender.test", ["bob@example.test"], msg)
            out["ok"] = True
        except smtplib.SMTPDataError as exc:
            out["code"], out["reply"] = exc.smtp_code, exc.smtp_error.decode()
        out["took"] = time.monotonic() - t0
    out["log"] = sg.wait_log("transaction", client_ip=ip)[-1]
    out["symbols"] = symbols(out["log"])
    return out


@pytest.fixture
def gate(spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer) -> Spamgate:
    uri_zone(dns_server)
    return start_gate(spamgate_factory, sink, dns_server, {"checks": URIBL})


CONTENT = ("MIME_", "ATTACH_", "PHISH_", "URIBL_")


def content_symbols(result: dict[str, Any]) -> dict[str, tuple[float, str]]:
    return {k: v for k, v in result["symbols"].items() if k.startswith(CONTENT)}


def test_clean_and_caught(gate: Spamgate, sink: Sink, dns_server: DnsTestServer) -> None:
    """A clean message scores nothing (its domain was looked up once); a message linking to a
    listed domain and a listed address scores the list's weight once, plus the phishing hints:
    tagged, still delivered (no URI list rejects on its own)."""
    clean = send(gate, mail("Minutes: https://www.good.example/notes and docs.good.example/x"), "127.0.3.1")
    assert clean["ok"]
    assert content_symbols(clean) == {}
    assert dns_server.count("good.example.uribl.test") == 1  # one registrable domain, one query
    html = (
        '<p><a href="http://www.Evil.Example/login">https://www.bank.example/</a>'
        '<img src="http://8.8.4.4/p.gif"><form action="https://evil.example/post"></form></p>'
    )
    caught = send(gate, mail(html, "text/html; charset=utf-8", subject="phish"), "127.0.3.2")
    assert caught["ok"]
    got = content_symbols(caught)
    assert got["URIBL_LISTED"] == (3.0, "uribl.test:evil.example,8.8.4.4")
    assert got["PHISH_LINK_MISMATCH"] == (3.0, "bank.example->evil.example")
    assert got["PHISH_IP_LINK"] == (2.0, "8.8.4.4")
    assert got["PHISH_HTML_FORM"][0] == 2.0
    assert caught["log"]["action"] == "tag"
    assert len(sink.messages) == 2


def test_dangerous_attachments_rejected_by_default(gate: Spamgate, sink: Sink) -> None:
    """Programs are refused with 554 5.7.1 and the ref: named .exe, disguised as a PDF, or in a
    zip inside a zip; an encrypted zip and a wrongly declared type only score."""
    named = send(gate, with_attachment("invoice.pdf.exe", PE), "127.0.3.3")
    assert named["code"] == 554
    assert named["reply"].startswith("5.7.1 [ref ")
    assert "attachment type not allowed" in named["reply"]
    assert {"ATTACH_BAD_EXTENSION", "ATTACH_DOUBLE_EXT", "ATTACH_EXECUTABLE"} <= named["symbols"].keys()
    disguised = send(gate, with_attachment("scan.pdf", PE, "application/pdf"), "127.0.3.4")
    assert disguised["code"] == 554
    assert disguised["symbols"]["ATTACH_TYPE_MISMATCH"] == (3.0, "scan.pdf:pdf->pe")
    nested = zip_of({"inner.zip": zip_of({"readme.txt": b"x", "setup.scr": PE})})
    archived = send(gate, with_attachment("photos.zip", nested, "application/zip"), "127.0.3.5")
    assert archived["code"] == 554
    assert "archive contains a forbidden file type" in archived["reply"]
    assert archived["symbols"]["ATTACH_ARCHIVE_BAD"][1] == "photos.zip/inner.zip/setup.scr"
    locked = send(gate, with_attachment("files.zip", zip_of({"a.txt": b"x"}, encrypted=True)), "127.0.3.6")
    assert locked["ok"]
    assert content_symbols(locked) == {"ATTACH_ARCHIVE_ENCRYPTED": (3.0, "files.zip")}
    assert len(sink.messages) == 1  # only the encrypted zip got through


def test_mime_bombs_answered_quickly(gate: Spamgate, sink: Sink) -> None:
    """20 000 parts and 2000 levels of nesting (both analysed in the content thread pool: over
    thread_above) are answered within a second and a half, with their symbols."""
    parts = "".join("--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(20_000)) + "--b1--\r\n"
    wide = send(gate, mail(parts, 'multipart/mixed; boundary="b1"', subject="wide"), "127.0.3.7")
    inner = "Content-Type: text/plain\r\n\r\ndeep"
    for i in range(2000):
        inner = f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n{inner}\r\n--n{i}--'
    deep_msg = (
        "From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: deep\r\n"
        "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <deep@sender.test>\r\n" + inner + "\r\n"
    ).encode()
    deep = send(gate, deep_msg, "127.0.3.8")
    assert wide["symbols"]["MIME_TOO_MANY_PARTS"] == (6.0, ">1000")
    assert deep["symbols"]["MIME_TOO_DEEP"] == (6.0, ">16")
    assert wide["took"] < 1.5, wide["took"]
    assert deep["took"] < 1.5, deep["took"]
    assert wide["ok"]
    assert deep["ok"]
    threaded = gate.wait_log("content_analysed", count=2)  # both over thread_above (128K)
    assert sorted(t["parts"] for t in threaded) == [17, 1000]


def test_uribl_listing_rejected_under_site_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    uri_zone(dns_server)
    sg = start_gate(
        spamgate_factory,
        sink,
        dns_server,
        {"checks": URIBL},
        site_rules=(
            '[symbols.URIBL_LISTED]\naction = "reject"\nreply = "554 5.7.1 Message links to a listed site"\n'
        ),
    )
    listed = send(sg, mail("Cheap: hxxp://evil[.]example/buy"), "127.0.3.9")
    assert listed["code"] == 554
    assert listed["reply"].startswith("5.7.1 [ref ")
    assert "listed site" in listed["reply"]
    assert send(sg, mail("See https://fine.example/"), "127.0.3.10")["ok"]
    assert len(sink.messages) == 1


@pytest.mark.parametrize(("on_temperror", "want"), [("continue", None), ("tempfail", 451)])
def test_uribl_timeout_is_temperror(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, on_temperror: str, want: int | None
) -> None:
    """A URI list that does not answer is URIBL_TEMPERROR (never "not listed"), within the DNS
    timeout; on_temperror = "tempfail" defers the message with 451."""
    uri_zone(dns_server)
    dns_server.drop("evil.example.uribl.test")
    checks = {"uribl": {**URIBL["uribl"], "on_temperror": on_temperror}}
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": checks})
    r = send(sg, mail("http://www.evil.example/"), "127.0.3.11")
    assert r["symbols"]["URIBL_TEMPERROR"] == (0.0, "uribl.test")
    assert "URIBL_LISTED" not in r["symbols"]
    assert r["took"] < 1.5, r["took"]
    if want is None:
        assert r["ok"]
    else:
        assert r["code"] == want
        assert "DNS_TEMPFAIL" in r["symbols"]
    assert dns_server.count("evil.example.uribl.test") >= 1


def test_broken_uri_list_disabled_and_observe_mode(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer
) -> None:
    """A list that lists RFC 5782's 'invalid' name answers everything: its probe disables it; a
    list probed with its own test entry (``probes``) stays on. With the attachments check in
    observe mode, a program is relayed with would_be reject."""
    uri_zone(dns_server)
    for name in ("test.all.test", "invalid.all.test", "evil.example.all.test"):
        dns_server.add(name, "A", "127.0.0.2")
    dns_server.add("probe.other.test", "A", "127.0.0.2")  # a list with its own test entry
    dns_server.add("evil.example.other.test", "A", "127.0.0.3")
    checks = {
        "uribl": {"zones": ["uribl.test*3", "all.test*9", "other.test*1"], "probes": ["other.test=probe"]},
        "attachments": {"mode": "observe"},
    }
    sg = start_gate(spamgate_factory, sink, dns_server, {"checks": checks})
    disabled = sg.wait_log("dns_list_disabled")
    assert disabled[0]["zone"] == "all.test"
    assert "invalid is listed" in disabled[0]["reason"]
    r = send(sg, with_attachment("tool.exe", PE, text="get it at http://evil.example/"), "127.0.3.12")
    assert r["ok"]
    listed = [s for s in r["log"]["symbols"] if s.startswith("URIBL_LISTED")]
    assert sorted(listed) == [
        "URIBL_LISTED(1){other.test:evil.example}",
        "URIBL_LISTED(3){uribl.test:evil.example}",
    ]
    assert r["log"]["would_be"] == "reject"
    assert any(s.startswith("~ATTACH_BAD_EXTENSION(10)") for s in r["log"]["symbols"])
    assert dns_server.count("evil.example.all.test") == 0
    assert len(sink.messages) == 1
