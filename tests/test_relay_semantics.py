"""Relay semantics end to end: what the client sends is what the sink gets, what the sink says
is what the client is told. Real spamgate process, real clients, the recording sink."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.harness.clients import Raw, message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

ADDED = (b"Received: from", b"Authentication-Results: mx.spamgate.test;", b"X-Spamgate-", b"X-Spam-Flag:")


def strip_added(data: bytes) -> bytes:
    """The message as the client sent it: drop the header fields spamgate prepends, nothing else."""
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines) and lines[i].startswith(ADDED):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


def added_headers(data: bytes) -> str:
    """The header fields spamgate prepended, unfolded, one per line."""
    rest = strip_added(data)
    head = data[: len(data) - len(rest)]
    return re.sub(r"\r\n[ \t]+", " ", head.decode("utf-8", "replace"))


def greet(raw: Raw, helo: str = "client.sender.test") -> None:
    assert raw.reply().startswith("220 ")
    assert raw.cmd(f"EHLO {helo}").startswith("250")


# -- 1. byte-exact bodies ---------------------------------------------------------------------


def test_empty_message_relayed_as_empty(relay: Spamgate, sink: Sink) -> None:
    """DATA followed at once by the final dot: the sink gets only spamgate's headers, no body."""
    raw = Raw(relay.port)
    greet(raw)
    assert raw.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert raw.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert raw.cmd("DATA").startswith("354")
    assert raw.cmd(".").startswith("250 2.0.0 Ok: queued as Q1")
    raw.cmd("QUIT")
    raw.close()
    got = sink.messages[0].data
    assert strip_added(got) == b""
    assert got.startswith(b"Received: from client.sender.test")


def test_dot_lines_are_unstuffed_exactly_once(relay: Spamgate, sink: Sink) -> None:
    """Dot-stuffed lines on the wire arrive with exactly one dot removed, a lone '.' line in the
    body (sent as '..') does not end the message, and a message whose first line starts with a
    dot keeps the rest of its dots."""
    wire = b"..first line starts with a dot\r\nSubject: dots\r\n\r\n..\r\n...\r\n. .\r\n.x\r\nend\r\n.\r\n"
    want = b".first line starts with a dot\r\nSubject: dots\r\n\r\n.\r\n..\r\n .\r\nx\r\nend\r\n"
    raw = Raw(relay.port)
    greet(raw)
    raw.send(b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert raw.reply().startswith("250")
    assert raw.reply().startswith("250")
    assert raw.reply().startswith("354")
    raw.send(wire)
    assert raw.reply().startswith("250 2.0.0")
    raw.close()
    assert strip_added(sink.messages[0].data) == want


def test_8bit_body_with_body_8bitmime(relay: Spamgate, sink: Sink) -> None:
    """An 8-bit body sent with BODY=8BITMIME arrives byte for byte and BODY=8BITMIME is passed on."""
    body = "Grüße aus Köln, ½ € – ありがとう\r\n\xff\xfe raw latin-1 bytes too\r\n"
    msg = message("eightbit", "").rstrip(b"\r\n") + b"\r\n\r\n" + body.encode("utf-8", "surrogateescape")
    msg = msg.replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe")  # real non-UTF-8 octets
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert (
            c.sendmail("alice@sender.test", ["bob@example.test"], msg, mail_options=["BODY=8BITMIME"]) == {}
        )
    got = sink.messages[0]
    assert strip_added(got.data) == msg
    assert b"\xff\xfe" in got.data
    assert "BODY=8BITMIME" in got.mail_params


def test_five_megabyte_message(relay: Spamgate, sink: Sink) -> None:
    """A 5 MB message is relayed intact and its SIZE parameter passed on."""
    line = b"".join(bytes([65 + (i % 26)]) for i in range(76)) + b"\r\n"
    body = (line * (5 * 1024 * 1024 // len(line))).decode()
    msg = message("big", body)
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], msg) == {}
    got = sink.messages[0]
    assert len(msg) > 5_000_000
    assert strip_added(got.data) == msg
    assert f"SIZE={len(msg)}" in got.mail_params
    tx = relay.wait_log("transaction")[0]
    assert tx["outcome"] == "delivered"
    assert tx["size"] == len(msg)


# -- 2. recipients, pipelining, SMTPUTF8, DSN -------------------------------------------------


def test_pipelined_transaction_replies_in_order(relay: Spamgate, sink: Sink) -> None:
    """MAIL, three RCPTs (accepted, refused, deferred by the sink) and DATA in one write: the
    replies come back in order with the sink's codes, and the message goes to the accepted one."""
    sink.state.reject_rcpts = {"nobody@example.test"}
    sink.state.tempfail_rcpts = {"busy@example.test"}
    raw = Raw(relay.port)
    greet(raw)
    raw.send(
        b"MAIL FROM:<alice@sender.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\n"
        b"RCPT TO:<nobody@example.test>\r\n"
        b"RCPT TO:<busy@example.test>\r\n"
        b"DATA\r\n"
    )
    replies = [raw.reply() for _ in range(5)]
    assert replies[0].startswith("250 2.1.0")
    assert replies[1].startswith("250 2.1.5")
    assert replies[2].startswith("550 5.1.1 <nobody@example.test>")
    assert replies[3] == "450 4.2.1 Mailbox busy, try later"
    assert replies[4].startswith("354")
    raw.send(message("pipelined") + b".\r\nQUIT\r\n")
    assert raw.reply().startswith("250 2.0.0 Ok: queued as Q1")
    assert raw.reply().startswith("221")
    raw.close()
    assert sink.messages[0].rcpts == ["bob@example.test"]
    tx = relay.wait_log("transaction")[0]
    assert [r["reply"][:3] for r in tx["rcpts"]] == ["250", "550", "450"]


def test_all_recipients_refused_downstream_means_no_data(relay: Spamgate, sink: Sink) -> None:
    """When the sink refused every recipient, DATA gets 554 5.5.1 and nothing is relayed."""
    sink.state.reject_rcpts = {"nobody@example.test"}
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("nobody@example.test")[0] == 550
        code, text = c.docmd("DATA")
        assert (code, text) == (554, b"5.5.1 No valid recipients")
    assert sink.messages == []


def test_smtputf8_address_passes_smtputf8_downstream(relay: Spamgate, sink: Sink) -> None:
    """A non-ASCII sender with SMTPUTF8: the sink receives MAIL ... SMTPUTF8 and the UTF-8 address."""
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.mail("jösé@sender.test", ["SMTPUTF8"])[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.data(message("utf8"))[0] == 250
    got = sink.messages[0]
    assert got.mail_from == "jösé@sender.test"
    assert "SMTPUTF8" in got.mail_params
    assert b"with UTF8ESMTP id" in got.data


def test_non_ascii_without_smtputf8_is_refused(relay: Spamgate, sink: Sink) -> None:
    """A non-ASCII address without SMTPUTF8 gets 553 5.6.7, in MAIL and in RCPT."""
    raw = Raw(relay.port)
    greet(raw)
    assert raw.cmd("MAIL FROM:<jösé@sender.test>".encode()).startswith("553 5.6.7")
    assert raw.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
    assert raw.cmd("RCPT TO:<bjørn@example.test>".encode()).startswith("553 5.6.7")
    raw.close()
    assert not any("bjørn" in c for c in sink.state.commands)


DSN_MAIL = "MAIL FROM:<alice@sender.test> RET=HDRS ENVID=QQ314159"
DSN_RCPT = "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.test"


def _dsn_transaction(port: int) -> None:
    raw = Raw(port)
    greet(raw)
    assert raw.cmd(DSN_MAIL).startswith("250")
    assert raw.cmd(DSN_RCPT).startswith("250")
    assert raw.cmd("DATA").startswith("354")
    raw.send(message("dsn") + b".\r\n")
    assert raw.reply().startswith("250")
    raw.close()


def test_dsn_parameters_passed_when_downstream_has_dsn(relay: Spamgate, sink: Sink) -> None:
    """RET, ENVID, NOTIFY and ORCPT reach a downstream that advertises DSN, unchanged."""
    _dsn_transaction(relay.port)
    got = sink.messages[0]
    assert got.mail_params == ["RET=HDRS", "ENVID=QQ314159"]
    assert got.rcpt_params["bob@example.test"] == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.test"]


def test_dsn_parameters_dropped_when_downstream_lacks_dsn(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """Against a downstream without DSN the parameters are dropped and the mail still goes through."""
    sink.state.extensions = [e for e in sink.state.extensions if e != "DSN"]
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    _dsn_transaction(sg.port)
    got = sink.messages[0]
    assert got.mail_params == []
    assert got.rcpt_params["bob@example.test"] == []


# -- 3. several transactions, one downstream session -----------------------------------------


def test_transactions_share_one_downstream_session(relay: Spamgate, sink: Sink) -> None:
    """Three messages and an RSET in one client session use one downstream connection."""
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("one")) == {}
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("carol@example.test")[0] == 250
        assert c.rset()[0] == 250
        assert c.sendmail("alice@sender.test", ["carol@example.test"], message("two")) == {}
        assert c.sendmail("alice@sender.test", ["dave@example.test"], message("three")) == {}
    assert [m.rcpts for m in sink.messages] == [
        ["bob@example.test"],
        ["carol@example.test"],
        ["dave@example.test"],
    ]
    assert sink.state.connections == 1
    assert [c.split()[0] for c in sink.state.commands].count("XCLIENT") == 1
    outcomes = [t["outcome"] for t in relay.wait_log("transaction", count=4)]
    assert outcomes == ["delivered", "rset", "delivered", "delivered"] or outcomes == [
        "delivered",
        "aborted",
        "delivered",
        "delivered",
    ]


# -- 10. trace and headers ----------------------------------------------------------------------


def test_received_header_names_helo_ip_ref_and_recipient(relay: Spamgate, sink: Sink) -> None:
    """Received: from <helo> (unknown [<ip>]) by <us> (spamgate) with ESMTP id <ref> for <rcpt>;
    the ref is the one in the transaction log line; with two recipients there is no 'for'."""
    with smtp(relay.port, "127.0.0.23") as c:
        c.ehlo("trace.sender.test")
        c.sendmail("alice@sender.test", ["bob@example.test"], message("one"))
        c.sendmail("alice@sender.test", ["bob@example.test", "carol@example.test"], message("two"))
    txs = relay.wait_log("transaction", count=2)
    first = added_headers(sink.messages[0].data)
    want = (
        f"Received: from trace.sender.test (unknown [127.0.0.23]) by mx.spamgate.test (spamgate) "
        f"with ESMTP id {txs[0]['ref']} for <bob@example.test>;"
    )
    assert want in first
    second = added_headers(sink.messages[1].data)
    assert f"with ESMTP id {txs[1]['ref']};" in second
    assert " for <" not in second


def test_own_authentication_results_removed_others_kept(relay: Spamgate, sink: Sink) -> None:
    """An incoming Authentication-Results claiming our authserv-id (folded or not) is removed;
    one from another authserv-id is kept verbatim."""
    extra = (
        "Authentication-Results: mx.spamgate.test; spf=pass smtp.mailfrom=sender.test\r\n"
        "Authentication-Results:\r\n mx.spamgate.test;\r\n dkim=pass header.d=sender.test\r\n"
        "Authentication-Results: mx.other.test; dkim=fail\r\n"
    )
    with smtp(relay.port) as c:
        c.ehlo("client.sender.test")
        c.sendmail("alice@sender.test", ["bob@example.test"], message("ar", extra=extra))
    data = strip_added(sink.messages[0].data)  # not our own A-R header, added on top
    assert b"mx.spamgate.test;" not in data
    assert b"spf=pass" not in data
    assert b"\r\nAuthentication-Results: mx.other.test; dkim=fail\r\n" in data


def test_site_rule_above_tag_threshold_tags_message(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], tmp_path: Path
) -> None:
    """A site rules file scoring HDR_DATE_MISSING at 7 (tag threshold 6): the sink gets
    X-Spam-Flag: YES and the configured subject prefix; a message with a Date is untouched."""
    rules = tmp_path / "site.toml"
    rules.write_text("[symbols.HDR_DATE_MISSING]\nscore = 7\n")
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "policy": {"site_rules": [str(rules)], "tag_subject_prefix": "[SPAM]"},
        }
    )
    no_date = message("tagged").replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b"")
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        c.sendmail("alice@sender.test", ["bob@example.test"], no_date)
        c.sendmail("alice@sender.test", ["bob@example.test"], message("clean"))
    tagged, clean = sink.messages[0].data, sink.messages[1].data
    assert b"\r\nX-Spam-Flag: YES\r\n" in tagged
    assert b"\r\nSubject: [SPAM] tagged\r\n" in tagged
    assert "HDR_DATE_MISSING(7)" in added_headers(tagged)
    assert added_headers(tagged).count("X-Spamgate-Symbols: tag;") == 1
    assert b"X-Spam-Flag" not in clean
    assert b"\r\nSubject: clean\r\n" in clean
    txs = sg.wait_log("transaction", count=2)
    assert [t["action"] for t in txs] == ["tag", "accept"]
