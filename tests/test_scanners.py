"""The external scanners end to end, against real servers on loopback: clamd, rspamd, spamd.

Each scanner: a clean message, a caught one, the verdict under an enforcing rule (or observe
mode), the scanner down (a dead port), hanging (a listener that never answers) and the size
cap. The servers start once per test session (tests/harness/{clamd,rspamd,spamd}.py).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.clamd import SIGNATURE, STREAM_MAX, VIRUS, Clamd
from tests.harness.clients import Raw, message
from tests.harness.dnsgate import symbols
from tests.harness.mail_auth import send_raw
from tests.harness.proc import Spamgate, dead_port, deep_merge, free_port
from tests.harness.rspamd import Rspamd
from tests.harness.silent import Silent
from tests.harness.sink import Sink
from tests.harness.spamd import Spamd

Factory = Callable[..., Spamgate]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def gate(
    factory: Factory, sink: Sink, checks: dict[str, Any], site_rules: str = "", **config: Any
) -> Spamgate:
    cfg = deep_merge({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "checks": checks}, config)
    sg = factory(cfg, start=False)
    if site_rules:
        path = sg.dir / "site-rules.toml"
        path.write_text(site_rules)
        sg.config = deep_merge(sg.config, {"policy": {"site_rules": [str(path)]}})
    return sg.start()


def scan_syms(sg: Spamgate, count: int, prefixes: tuple[str, ...]) -> dict[str, str]:
    line = sg.wait_log("transaction", count=count)[count - 1]
    return {k: v[1] for k, v in symbols(line).items() if k.startswith(prefixes)}


def infected() -> bytes:
    """A message with an attachment (base64) holding the test signature: clamd decodes MIME."""
    payload = base64.encodebytes(b"some file\n" + VIRUS + b"\n").decode().replace("\n", "\r\n")
    body = (
        "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="x.bin"\r\n\r\n{payload}--b1--\r\n'
    )
    extra = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n'
    return message("infected", body=body, extra=extra)


def big(size: int) -> bytes:
    line = "x" * 76 + "\r\n"
    return message("big", body=line * (size // len(line) + 1))


def clam(address: str, **kw: Any) -> dict[str, Any]:
    return {"clamav": {"enabled": True, "address": address, **kw}}


# -- ClamAV ------------------------------------------------------------------------------------


def test_clamav_clean_virus_and_observe(
    spamgate_factory: Factory,
    sink: Sink,
    clamd_server: Clamd,
) -> None:
    """Clean: delivered, no symbol. A virus in a base64 attachment: 554 5.7.1 naming it, never
    relayed. The same virus with the check in observe mode, through clamd's Unix socket:
    delivered, ~VIRUS_FOUND logged."""
    sg = gate(spamgate_factory, sink, clam(clamd_server.address))
    assert send_raw(sg.port, message("clean")).get("ok")
    assert scan_syms(sg, 1, ("VIRUS", "CLAMAV", "SCANNER")) == {}
    r = send_raw(sg.port, infected())
    assert r["error"] == 554
    assert r["reply"].startswith("5.7.1 [ref ")
    assert f"virus ({SIGNATURE}.UNOFFICIAL)" in r["reply"]
    assert scan_syms(sg, 2, ("VIRUS",)) == {"VIRUS_FOUND": f"{SIGNATURE}.UNOFFICIAL"}
    assert len(sink.messages) == 1
    observing = gate(spamgate_factory, sink, clam(f"unix:{clamd_server.socket}", mode="observe"))
    assert send_raw(observing.port, infected()).get("ok")
    line = observing.wait_log("transaction")[0]
    assert f"~VIRUS_FOUND(0){{{SIGNATURE}.UNOFFICIAL}}" in line["symbols"]
    assert line["would_be"] == "reject"


@pytest.mark.parametrize(("on_error", "code"), [("tempfail", 451), ("continue", None)])
def test_clamav_down(spamgate_factory: Factory, sink: Sink, on_error: str, code: int | None) -> None:
    """clamd not listening: CLAMAV_TEMPERROR; the antivirus fails closed by default (451 4.7.1,
    the sender retries), or lets the message through with on_error = "continue"."""
    checks = clam(f"127.0.0.1:{dead_port()}")
    if on_error != "tempfail":
        checks["clamav"]["on_error"] = on_error
    sg = gate(spamgate_factory, sink, checks)
    r = send_raw(sg.port, message("clean"))
    got = scan_syms(sg, 1, ("CLAMAV", "SCANNER"))
    assert got["CLAMAV_TEMPERROR"].startswith("unavailable: 127.0.0.1:")
    if code is None:
        assert r.get("ok")
        assert "SCANNER_TEMPFAIL" not in got
    else:
        assert r["error"] == code
        assert r["reply"].startswith("4.7.1 [ref ")
        assert "could not be scanned" in r["reply"]
        assert got["SCANNER_TEMPFAIL"] == "CLAMAV_TEMPERROR"
        assert not sink.messages


def test_clamav_hangs_and_connection_limit(spamgate_factory: Factory, sink: Sink) -> None:
    """A clamd that accepts and never answers: 451 after the scanner's timeout (not the stage
    budget). Two messages ending at the same moment with max_connections = 1: the second
    connection (if any) opens only when the first scan gave up; the second message waited for
    the slot (and gave up as busy, or got it and timed out)."""
    with Silent() as silent:
        sg = gate(spamgate_factory, sink, clam(silent.address, timeout="1s", max_connections=1))
        clients = [Raw(sg.port, "127.0.0.9") for _ in range(2)]
        for c in clients:
            assert c.reply().startswith("220")
            for cmd in (
                "EHLO mail.sender.test",
                "MAIL FROM:<alice@sender.test>",
                "RCPT TO:<bob@example.test>",
            ):
                assert c.cmd(cmd).startswith("250")
            assert c.cmd("DATA").startswith("354")
        t0 = time.monotonic()
        for i, c in enumerate(clients):  # both DATA stages start within a millisecond or so
            c.send(message(f"m{i}") + b".\r\n")
        replies = [c.reply() for c in clients]
        assert time.monotonic() - t0 < 3
        assert all(r.startswith("451 4.7.1 [ref ") for r in replies), replies
        assert 1 <= silent.accepted <= 2
        if silent.accepted == 2:
            assert silent.times[1] - silent.times[0] > 0.9  # not before the first slot was free
    kinds = {scan_syms(sg, n, ("CLAMAV",))["CLAMAV_TEMPERROR"].split(":")[0] for n in (1, 2)}
    assert "timeout" in kinds
    assert kinds <= {"timeout", "busy"}


def test_clamav_size_caps(spamgate_factory: Factory, sink: Sink, clamd_server: Clamd) -> None:
    """Over max_size: not sent, CLAMAV_SKIPPED{size>limit}, delivered. Under max_size but over
    clamd's StreamMaxLength (a max_size set too high): clamd's refusal is the same symbol."""
    sg = gate(spamgate_factory, sink, clam(clamd_server.address, max_size="4K"))
    data = big(6000) + VIRUS
    assert send_raw(sg.port, data).get("ok")
    skipped = scan_syms(sg, 1, ("CLAMAV", "VIRUS"))
    assert list(skipped) == ["CLAMAV_SKIPPED"]
    assert skipped["CLAMAV_SKIPPED"].endswith(">4096")
    sg2 = gate(spamgate_factory, sink, clam(clamd_server.address, max_size="2M"))
    assert send_raw(sg2.port, big(STREAM_MAX + 1000)).get("ok")
    assert scan_syms(sg2, 1, ("CLAMAV",))["CLAMAV_SKIPPED"].endswith(">StreamMaxLength")


# -- rspamd ------------------------------------------------------------------------------------


def rsp(address: str, **kw: Any) -> dict[str, Any]:
    return {"rspamd": {"enabled": True, "address": address, **kw}}


def test_rspamd_clean_gtube_headers_and_envelope(
    spamgate_factory: Factory,
    sink: Sink,
    rspamd_server: Rspamd,
) -> None:
    """Clean: delivered with RSPAMD_SYMBOLS as evidence, rspamd saw the real envelope (its
    FROM_EQ_ENVFROM and RCPT_COUNT_ONE), and with add_headers its X-Spamd-Result and
    X-Rspamd-Queue-Id (our ref) are in the message. GTUBE: rspamd says reject, so does
    spamgate (550 5.7.1), with rspamd's score and symbols in the log line."""
    sg = gate(spamgate_factory, sink, rsp(rspamd_server.address, add_headers=True, max_symbols=200))
    assert send_raw(sg.port, message("clean", frm="alice@sender.test")).get("ok")
    got = scan_syms(sg, 1, ("RSPAMD",))
    assert list(got) == ["RSPAMD_SYMBOLS"]
    names = {s.split(":")[0] for s in got["RSPAMD_SYMBOLS"].split(",")}
    assert {"FROM_EQ_ENVFROM", "RCPT_COUNT_ONE"} <= names
    ref = sg.wait_log("transaction")[0]["ref"]
    relayed = sink.messages[-1].data
    assert f"X-Rspamd-Queue-Id: {ref}\r\n".encode() in relayed
    assert b"X-Spamd-Result: default: False [" in relayed
    r = send_raw(sg.port, message("spam", body=GTUBE + "\r\n"))
    assert r["error"] == 550
    assert r["reply"].startswith("5.7.1 [ref ")
    got = scan_syms(sg, 2, ("RSPAMD",))
    assert got == {"RSPAMD_SYMBOLS": "GTUBE:0", "RSPAMD_REJECT": "15/15"}
    assert len(sink.messages) == 1


def test_rspamd_removes_forged_headers(spamgate_factory: Factory, sink: Sink, rspamd_server: Rspamd) -> None:
    """rspamd asks (milter.remove_headers) to remove the client's copies of the headers it adds:
    with remove_headers a forged "X-Spamd-Result: ... [-100" does not reach the mailbox beside
    rspamd's real one; without it, both do."""
    forged = "X-Spamd-Result: default: False [-100.00 / 15.00]\r\n"
    for remove, count in ((True, 1), (False, 2)):
        sg = gate(spamgate_factory, sink, rsp(rspamd_server.address, add_headers=True, remove_headers=remove))
        assert send_raw(sg.port, message(f"forged {remove}", extra=forged)).get("ok")
        relayed = sink.messages[-1].data
        assert relayed.count(b"X-Spamd-Result:") == count, relayed[:600]
        assert (b"[-100.00 / 15.00]" in relayed) is (not remove)
        sg.stop()


def test_rspamd_action_mapping_and_observe(
    spamgate_factory: Factory,
    sink: Sink,
    rspamd_server: Rspamd,
) -> None:
    """rspamd's reject mapped to RSPAMD_ADD_HEADER: GTUBE is delivered tagged (X-Spam-Flag).
    In observe mode: delivered, the log says it would have been rejected."""
    sg = gate(spamgate_factory, sink, rsp(rspamd_server.address, actions={"reject": "RSPAMD_ADD_HEADER"}))
    assert send_raw(sg.port, message("spam", body=GTUBE + "\r\n")).get("ok")
    line = sg.wait_log("transaction")[0]
    assert line["action"] == "tag"
    assert "RSPAMD_ADD_HEADER(6){15/15}" in line["symbols"]
    assert b"X-Spam-Flag: YES" in sink.messages[-1].data
    obs = gate(spamgate_factory, sink, rsp(rspamd_server.address, mode="observe"))
    assert send_raw(obs.port, message("spam", body=GTUBE + "\r\n")).get("ok")
    line = obs.wait_log("transaction")[0]
    assert line["would_be"] == "reject"
    assert "~RSPAMD_REJECT(0){15/15}" in line["symbols"]


def test_rspamd_down_hanging_and_size_cap(spamgate_factory: Factory, sink: Sink) -> None:
    """rspamd down: RSPAMD_TEMPERROR and delivered (on_error = "continue", the default), or
    451 with on_error = "tempfail". Hanging: the same after the timeout. Over max_size: not
    sent, RSPAMD_SKIPPED."""
    dead = f"127.0.0.1:{dead_port()}"
    sg = gate(spamgate_factory, sink, rsp(dead))
    assert send_raw(sg.port, message("a")).get("ok")
    assert scan_syms(sg, 1, ("RSPAMD", "SCANNER"))["RSPAMD_TEMPERROR"].startswith("unavailable:")
    strict = gate(spamgate_factory, sink, rsp(dead, on_error="tempfail"))
    r = send_raw(strict.port, message("b"))
    assert r["error"] == 451
    assert scan_syms(strict, 1, ("SCANNER",)) == {"SCANNER_TEMPFAIL": "RSPAMD_TEMPERROR"}
    with Silent() as silent:
        slow = gate(spamgate_factory, sink, rsp(silent.address, timeout="1s", max_size="4K"))
        t0 = time.monotonic()
        assert send_raw(slow.port, message("c")).get("ok")
        assert 0.9 < time.monotonic() - t0 < 3
        assert scan_syms(slow, 1, ("RSPAMD",))["RSPAMD_TEMPERROR"].startswith("timeout:")
        assert send_raw(slow.port, big(6000)).get("ok")
        assert scan_syms(slow, 2, ("RSPAMD",))["RSPAMD_SKIPPED"].endswith(">4096")
        assert silent.accepted == 1


# -- SpamAssassin ------------------------------------------------------------------------------


def sa(address: str, **kw: Any) -> dict[str, Any]:
    return {"spamassassin": {"enabled": True, "address": address, **kw}}


def test_spamassassin_clean_gtube_and_enforcing_rule(
    spamgate_factory: Factory,
    sink: Sink,
    spamd_server: Spamd,
) -> None:
    """Clean: SPAMASSASSIN_SCORE with the score under 5. GTUBE: SPAMASSASSIN_SPAM (weight 6:
    delivered tagged) with score/threshold and the rules. Under a site rule that rejects
    SPAMASSASSIN_SPAM: 550 5.7.1."""
    sg = gate(spamgate_factory, sink, sa(spamd_server.address))
    assert send_raw(sg.port, message("clean")).get("ok")
    score = scan_syms(sg, 1, ("SPAMASSASSIN",))["SPAMASSASSIN_SCORE"]
    assert float(score.split("/")[0]) < 5
    assert send_raw(sg.port, message("spam", body=GTUBE + "\r\n")).get("ok")
    line = sg.wait_log("transaction", count=2)[1]
    assert line["action"] == "tag"
    spam = symbols(line)["SPAMASSASSIN_SPAM"]
    assert spam[0] == 6
    value, _, rules = spam[1].partition(":")
    assert float(value.split("/")[0]) > 900
    assert value.split("/")[1] == "5"
    assert "GTUBE" in rules.split(",")
    rule = '[symbols.SPAMASSASSIN_SPAM]\naction = "reject"\nreply = "550 5.7.1 Message rejected as spam"\n'
    strict = gate(spamgate_factory, sink, sa(spamd_server.address), site_rules=rule)
    r = send_raw(strict.port, message("spam", body=GTUBE + "\r\n"))
    assert r["error"] == 550
    assert r["reply"].startswith("5.7.1 [ref ")


def test_spamassassin_down_hanging_and_size_cap(spamgate_factory: Factory, sink: Sink) -> None:
    """spamd down or hanging: SPAMASSASSIN_TEMPERROR, delivered (continue) or 451 (tempfail);
    over max_size: SPAMASSASSIN_SKIPPED without a connection."""
    sg = gate(spamgate_factory, sink, sa(f"127.0.0.1:{dead_port()}", on_error="tempfail"))
    r = send_raw(sg.port, message("a"))
    assert r["error"] == 451
    got = scan_syms(sg, 1, ("SPAMASSASSIN", "SCANNER"))
    assert got["SPAMASSASSIN_TEMPERROR"].startswith("unavailable:")
    assert got["SCANNER_TEMPFAIL"] == "SPAMASSASSIN_TEMPERROR"
    with Silent() as silent:
        slow = gate(spamgate_factory, sink, sa(silent.address, timeout="1s", max_size="4K"))
        assert send_raw(slow.port, big(6000)).get("ok")
        assert scan_syms(slow, 1, ("SPAMASSASSIN",))["SPAMASSASSIN_SKIPPED"].endswith(">4096")
        assert silent.accepted == 0
        t0 = time.monotonic()
        assert send_raw(slow.port, message("b")).get("ok")
        assert 0.9 < time.monotonic() - t0 < 3
        assert scan_syms(slow, 2, ("SPAMASSASSIN",))["SPAMASSASSIN_TEMPERROR"].startswith("timeout:")


# -- health, readiness, metrics, concurrency ---------------------------------------------------


def test_readiness_and_metrics(
    spamgate_factory: Factory,
    sink: Sink,
    clamd_server: Clamd,
    spamd_server: Spamd,
) -> None:
    """/readyz lists the scanners whose failure defers mail (the fail-closed antivirus) or that
    ask for it (ready_check = "yes"): 503 naming rspamd while it is down. /metrics has each
    scanner's latency, errors by kind, verdicts and up/down state."""
    from tests.harness.admin import get, sample

    port = free_port()
    checks = {
        **clam(clamd_server.address),
        **sa(spamd_server.address),
        **rsp(f"127.0.0.1:{dead_port()}", ready_check="yes"),
    }
    metrics = {"listen": f"127.0.0.1:{port}", "readyz_cache": "0s", "readyz_timeout": "2s"}
    sg = gate(spamgate_factory, sink, checks, metrics=metrics)
    sg.wait_log("admin_listening")
    status, body = get(port, "/readyz")
    assert status == 503
    assert "clamav ok" in body.splitlines()
    assert "rspamd failed" in body.splitlines()
    assert "spamassassin" not in body  # on_error = "continue": its failure defers nothing
    assert send_raw(sg.port, message("clean")).get("ok")
    sg.wait_log("transaction")
    text = get(port, "/metrics")[1]
    assert sample(text, "spamgate_scanner_seconds_count", scanner="clamav") == 1
    assert sample(text, "spamgate_scanner_seconds_count", scanner="spamassassin") == 1
    assert sample(text, "spamgate_scanner_verdicts_total", scanner="clamav", verdict="clean") == 1
    assert sample(text, "spamgate_scanner_verdicts_total", scanner="spamassassin", verdict="ham") == 1
    assert sample(text, "spamgate_scanner_errors_total", scanner="rspamd", kind="unavailable") == 1
    assert sample(text, "spamgate_scanner_up", scanner="clamav") == 1
    assert sample(text, "spamgate_scanner_up", scanner="rspamd") == 0


def test_scanners_run_concurrently(
    spamgate_factory: Factory,
    sink: Sink,
    clamd_server: Clamd,
    spamd_server: Spamd,
    rspamd_server: Rspamd,
) -> None:
    """Three scanners that each hang for their 1 s timeout cost the message about 1 s, not 3:
    they run side by side (and beside DKIM/DMARC) under the stage budget. With the three real
    scanners the message is judged by all three in one transaction."""
    with Silent() as a, Silent() as b, Silent() as c:
        checks = {
            **clam(a.address, timeout="1s", on_error="continue"),
            **rsp(b.address, timeout="1s"),
            **sa(c.address, timeout="1s"),
        }
        sg = gate(spamgate_factory, sink, checks)
        t0 = time.monotonic()
        assert send_raw(sg.port, message("slow")).get("ok")
        elapsed = time.monotonic() - t0
        got = scan_syms(sg, 1, ("CLAMAV", "RSPAMD", "SPAMASSASSIN"))
        assert sorted(got) == ["CLAMAV_TEMPERROR", "RSPAMD_TEMPERROR", "SPAMASSASSIN_TEMPERROR"]
        assert 0.9 < elapsed < 2.5, elapsed  # one after the other: 3 s and more
    real = {**clam(clamd_server.address), **rsp(rspamd_server.address), **sa(spamd_server.address)}
    sg = gate(spamgate_factory, sink, real)
    r = send_raw(sg.port, infected())
    assert r["error"] == 554
    got = scan_syms(sg, 1, ("VIRUS", "RSPAMD", "SPAMASSASSIN"))
    assert {"VIRUS_FOUND", "RSPAMD_SYMBOLS", "SPAMASSASSIN_SCORE"} <= set(got)
