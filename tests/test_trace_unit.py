"""The headers spamgate adds and removes: Received, forged Authentication-Results."""

from __future__ import annotations

import ipaddress

from proxy.model import Connection, RcptResult, Transaction
from proxy.session.trace import add_subject_prefix, received_header, strip_own_auth_results


def test_received_header_names_client_helo_ref_and_recipient() -> None:
    conn = Connection("ab12cd34", ipaddress.ip_address("2001:db8::7"), 4242, ("2001:db8::7", 4242))
    conn.helo, conn.esmtp, conn.reverse_name, conn.tls = (
        "mx.sender.example",
        True,
        "mx.sender.example",
        "TLSv1.3 X",
    )
    txn = Transaction("ab12cd34.1", "a@sender.example", {})
    txn.rcpts.append(RcptResult("bob@example.test", {}, accepted=True))
    txn.accepted.append("bob@example.test")
    h = received_header(conn, txn, "mx.spamgate.test").decode()
    assert h.startswith("Received: from mx.sender.example (mx.sender.example [IPv6:2001:db8::7])\r\n")
    assert "(using TLSv1.3 X)" in h
    assert "by mx.spamgate.test (spamgate) with ESMTPS id ab12cd34.1" in h
    assert "for <bob@example.test>;" in h
    assert h.endswith("\r\n")


def test_strip_own_authentication_results_only() -> None:
    msg = (
        b"Authentication-Results: mx.spamgate.test; spf=pass\r\n"
        b"Authentication-Results: (forged)\r\n mx.spamgate.test;\r\n dkim=pass\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Subject: hi\r\n\r\nAuthentication-Results: mx.spamgate.test; in the body\r\n"
    )
    out, removed = strip_own_auth_results(msg, "mx.spamgate.test")
    assert removed == 2
    assert out == (
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Subject: hi\r\n\r\nAuthentication-Results: mx.spamgate.test; in the body\r\n"
    )
    assert strip_own_auth_results(b"Subject: x\r\n\r\nbody\r\n", "mx.spamgate.test") == (
        b"Subject: x\r\n\r\nbody\r\n",
        0,
    )


def test_subject_prefix() -> None:
    assert add_subject_prefix(b"Subject: hello\r\n\r\nb", "[SPAM]") == b"Subject: [SPAM] hello\r\n\r\nb"
    assert add_subject_prefix(b"From: a\r\n\r\nb", "[SPAM]").startswith(b"Subject: [SPAM]\r\n")
