"""Replies: all of spamgate's own are in proxy/replies.py; every refusal carries an enhanced
code and a [ref ...] that is in the log; local failures are 4xx, never 5xx."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy import replies as R
from tests.harness.clients import Raw, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

PROXY = Path(__file__).resolve().parents[1] / "proxy"
REFUSAL = re.compile(r"^([45]\d\d) ([45]\.\d{1,3}\.\d{1,3}) \[ref ([0-9a-f]+\.\d+)\] \S")


def test_no_reply_built_outside_replies_module() -> None:
    offenders = []
    for path in PROXY.rglob("*.py"):
        if path.name == "replies.py" and path.parent == PROXY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name == "Reply":
                    offenders.append(f"{path.relative_to(PROXY.parent)}:{node.lineno}")
    assert offenders == [], "define replies in proxy/replies.py: " + ", ".join(offenders)


def test_every_constant_has_matching_enhanced_code() -> None:
    consts = {k: v for k, v in vars(R).items() if isinstance(v, R.Reply)}
    assert len(consts) > 30
    for name, r in consts.items():
        if r.code >= 400 or name in ("OK", "BYE"):
            assert r.enhanced, name
            assert r.enhanced[0] == str(r.code)[0], name
    assert R.INTERNAL_ERROR.is_temporary
    for name in ("DOWNSTREAM_UNAVAILABLE", "DOWNSTREAM_LOST", "DOWNSTREAM_TLS", "TIMEOUT", "SHUTTING_DOWN"):
        assert getattr(R, name).is_temporary, name


@pytest.fixture
def sg(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Spamgate:
    return spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "limits": {"max_message_size": "10K", "max_recipients": 1},
            "checks": {"static_lists": {"block": ["127.0.12.9/32"]}},
        }
    )


def check_refusal(reply: str, code: str, refs: list[str]) -> None:
    m = REFUSAL.match(reply)
    assert m, reply
    assert m.group(1) == code, reply
    refs.append(m.group(3))


def test_refusals_carry_enhanced_code_and_logged_ref(sg: Spamgate, sink: Sink) -> None:
    refs: list[str] = []
    with Raw(sg.port, "127.0.12.1") as c:
        assert c.reply().startswith("220 ")
        assert c.cmd("EHLO client.test").startswith("250")
        check_refusal(c.cmd("MAIL FROM:<a@sender.test> SIZE=999999"), "552", refs)
        assert c.cmd("MAIL FROM:<a@sender.test>").startswith("250")
        check_refusal(c.cmd("RCPT TO:<x@elsewhere.test>"), "554", refs)  # relay denied
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        check_refusal(c.cmd("RCPT TO:<carol@example.test>"), "452", refs)  # too many recipients
        assert c.cmd("DATA").startswith("354")
        check_refusal(c.cmd(b"Subject: x\r\n\r\nbare\nLF\r\n."), "554", refs)
        assert c.cmd("MAIL FROM:<a@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        check_refusal(c.cmd(b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 12 + b"."), "552", refs)
        sink.stop()
        check_refusal(c.cmd("MAIL FROM:<a@sender.test>"), "451", refs)  # downstream down
    with Raw(sg.port, "127.0.12.9") as blocked:
        check_refusal(blocked.reply(), "554", refs)  # blocked at connect
    assert sink.messages == []
    sg.wait_log("connection", count=2)
    log = sg.log_path.read_text()
    assert len(refs) == 7
    for ref in refs:
        assert f"[ref {ref}]" in log, ref


def test_local_delivery_failure_is_4xx(tmp_path: Path, spamgate_factory: Callable[..., Spamgate]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file where the Maildir root should be")
    sg = spamgate_factory({"relay": {"maildir": str(not_a_dir)}})
    with smtp(sg.port) as c:
        c.ehlo("client.test")
        assert c.mail("a@sender.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, text = c.data(b"Subject: x\r\n\r\nhi\r\n")
    assert code == 451
    assert text.startswith(b"4.3.0 ")
    assert sg.wait_log("transaction")[0]["outcome"] == "deferred"
