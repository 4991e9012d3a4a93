"""Every refusal carries an enhanced status code and a [ref ...] that is also in the log."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from proxy import replies as R
from tests.harness.clients import Raw
from tests.harness.proc import ROOT, Spamgate
from tests.harness.sink import Sink

REFUSAL = re.compile(r"^([45]\d\d) ([45]\.\d{1,3}\.\d{1,3}) \[ref ([0-9a-f]+\.\d+)\] \S")


def test_reply_constants_only_in_replies_module() -> None:
    inline = []
    for path in (ROOT / "proxy").rglob("*.py"):
        if path.name == "replies.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bReply\(\s*\d", line):
                inline.append(f"{path.relative_to(ROOT)}:{n}")
    assert inline == []


def test_every_own_refusal_has_enhanced_code() -> None:
    for reply in R.OWN:
        if reply.code >= 400:
            assert re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", reply.enhanced), reply
            assert reply.enhanced[0] == str(reply.code)[0], reply
    assert R.INTERNAL_ERROR.code // 100 == 4
    assert R.LOCAL_DELIVERY_FAILED.code // 100 == 4


def _check(sg: Spamgate, reply: str, code: str, enhanced: str) -> str:
    m = REFUSAL.match(reply)
    assert m, reply
    assert (m.group(1), m.group(2)) == (code, enhanced), reply
    return m.group(3)


def test_reject_paths_carry_ref(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "limits": {"max_message_size": "2K", "max_recipients": 1},
        }
    )
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    # Relay denied at RCPT.
    c.cmd("MAIL FROM:<alice@sender.test>")
    refs = [_check(sg, c.cmd("RCPT TO:<x@elsewhere.test>"), "554", "5.7.1")]
    # Too many recipients.
    c.cmd("RCPT TO:<bob@example.test>")
    refs.append(_check(sg, c.cmd("RCPT TO:<carol@example.test>"), "452", "4.5.3"))
    # Bare LF in the message.
    c.cmd("DATA")
    refs.append(_check(sg, c.cmd(b"Subject: x\r\n\r\nbare\nlf\r\n."), "554", "5.5.2"))
    # Declared size.
    refs.append(_check(sg, c.cmd("MAIL FROM:<alice@sender.test> SIZE=99999"), "552", "5.3.4"))
    # Downstream down.
    sink.stop()
    refs.append(_check(sg, c.cmd("MAIL FROM:<alice@sender.test>"), "451", "4.4.1"))
    c.cmd("QUIT")
    logged = {t["ref"] for t in sg.wait_log("connection") and sg.transactions()}
    assert set(refs) <= logged, (refs, logged)


def test_connect_reject_carries_ref(spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"checks": {"static_lists": {"block": ["127.0.8.8/32"]}}})
    c = Raw(sg.port, "127.0.8.8")
    reply = c.reply()
    m = REFUSAL.match(reply)
    assert m, reply
    assert m.group(1, 2) == ("554", "5.7.1")
    c.cmd("QUIT")
    conn = sg.wait_log("connection")[0]
    assert conn["ref"] == m.group(3)
    assert conn["reply"] == reply


def test_local_failure_is_never_5xx(spamgate_factory: Callable[..., Spamgate], tmp_path: Path) -> None:
    """The Maildir root is a file: delivery fails, the client gets 451 with a ref, never 5xx."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sg = spamgate_factory({"relay": {"maildir": str(blocker)}})
    c = Raw(sg.port)
    c.reply()
    c.cmd("EHLO client.sender.test")
    c.cmd("MAIL FROM:<alice@sender.test>")
    c.cmd("RCPT TO:<bob@example.test>")
    c.cmd("DATA")
    reply = c.cmd(b"Subject: x\r\n\r\nhi\r\n.")
    ref = _check(sg, reply, "451", "4.3.0")
    tx = sg.wait_log("transaction")[0]
    assert tx["ref"] == ref
    assert tx["outcome"] == "deferred"
    assert sg.wait_log("maildir_failed")
