"""The scanner clients' parsers on answers the real servers rarely give (errors, garbage,
chunked HTTP, odd rspamd JSON): each either reads them or raises ScanError with its kind."""

from __future__ import annotations

import asyncio

import pytest

from proxy.scan import http
from proxy.scan.base import Endpoint, ScanError
from proxy.scan.clamd import ClamdAnswer, parse_answer
from proxy.scan.rspamd import Envelope
from proxy.scan.rspamd import parse_answer as rspamd_answer
from proxy.scan.spamd import SpamdAnswer, read_answer
from proxy.session.trace import remove_instances


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"stream: OK\0", ClamdAnswer(False)),
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ClamdAnswer(True, "Win.Test.EICAR_HDB-1")),
        (b"INSTREAM size limit exceeded. ERROR\0", "too_big"),
        (b"stream: Can't allocate memory ERROR\0", "refused"),
        (b"hello\0", "protocol"),
    ],
)
def test_clamd_answers(raw: bytes, want: ClamdAnswer | str) -> None:
    if isinstance(want, str):
        with pytest.raises(ScanError) as err:
            parse_answer(raw)
        assert err.value.kind == want
    else:
        assert parse_answer(raw) == want


def feed(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


async def test_spamd_answers() -> None:
    ok = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 1003.3 / 5.0\r\n\r\nGTUBE,NO_RECEIVED,\r\n"
    assert await read_answer(feed(ok)) == SpamdAnswer(True, 1003.3, 5.0, ("GTUBE", "NO_RECEIVED"))
    for raw, kind in (
        (b"SPAMD/1.0 76 Bad header line: (Content-Length contains non-numeric bytes)\r\n", "refused"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "protocol"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "protocol"),  # no Spam header
    ):
        with pytest.raises(ScanError) as err:
            await read_answer(feed(raw))
        assert err.value.kind == kind


async def test_http_chunked_and_bounds() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n"
    resp = await http.read_response(feed(chunked), 100)
    assert (resp.status, resp.body) == (200, b"pong")
    with pytest.raises(ScanError) as err:
        await http.read_response(feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"), 100)
    assert err.value.kind == "protocol"
    request = http.request("POST", "/checkv2", "h", [("Helo", "evil\r\nX-Injected: 1")], 3)
    assert b"\r\nX-Injected" not in request
    assert b"Helo: evil  X-Injected: 1\r\n" in request


def test_rspamd_answer_and_envelope() -> None:
    body = (
        b'{"action":"add header","score":7.5,"required_score":15,'
        b'"symbols":{"A":{"score":5.5,"options":["x"]},"B":{"score":2}},'
        b'"milter":{"add_headers":{"X-Spamd-Result":{"value":"v","order":0},'
        b'"X-Two":[{"value":"1"},{"value":"2"}],"Bad Name:":"no"},'
        b'"remove_headers":{"X-Spamd-Result":0,"X-Two":-1,"Bad:":0,"X-Str":"1"}}}'
    )
    a = rspamd_answer(body)
    assert (a.action, a.score, a.required) == ("add header", 7.5, 15.0)
    assert [(s.name, s.score, s.options) for s in a.symbols] == [("A", 5.5, ("x",)), ("B", 2.0, ())]
    assert a.add_headers == (("X-Spamd-Result", "v"), ("X-Two", "1"), ("X-Two", "2"))
    assert a.remove_headers == (("X-Spamd-Result", 0), ("X-Two", -1))
    with pytest.raises(ScanError):
        rspamd_answer(b"<html>")
    env = Envelope("192.0.2.1", "mx.example", "", ("a@x.test", "b@x.test"), "", "ab.1")
    assert env.headers() == [
        ("Ip", "192.0.2.1"),
        ("Helo", "mx.example"),
        ("From", "<>"),
        ("Rcpt", "<a@x.test>"),
        ("Rcpt", "<b@x.test>"),
        ("Hostname", "unknown"),
        ("Queue-Id", "ab.1"),
    ]


def test_endpoints() -> None:
    assert str(Endpoint.parse("unix:/run/clamav/clamd.ctl", 3310)) == "unix:/run/clamav/clamd.ctl"
    assert Endpoint.parse("/run/x.sock", 3310).path == "/run/x.sock"
    assert Endpoint.parse("[::1]:783", 1) == Endpoint("::1", 783)
    assert Endpoint.parse("scanner", 3310) == Endpoint("scanner", 3310)


def test_rspamd_symbol_list_is_bounded_and_ordered() -> None:
    """Largest |score| first, then by name; past max_symbols a count of the rest."""
    from proxy.checks.data.rspamd import symbol_list

    a = rspamd_answer(
        b'{"action":"no action","score":1,"required_score":15,"symbols":{'
        b'"Z":{"score":0},"A":{"score":0},"NEG":{"score":-3.5},"POS":{"score":2.125}}}'
    )
    assert symbol_list(a, 10) == "NEG:-3.5,POS:2.12,A:0,Z:0"
    assert symbol_list(a, 2) == "NEG:-3.5,POS:2.12,+2"


def test_remove_header_instances() -> None:
    """rspamd's remove_headers orders: 0 every instance, n the n-th, -n the n-th from the end."""
    msg = b"A: 1\r\nB: x\r\n  folded\r\nA: 2\r\nA: 3\r\nC: c\r\n\r\nA: body\r\n"
    assert remove_instances(msg, [("a", 0)]) == b"B: x\r\n  folded\r\nC: c\r\n\r\nA: body\r\n"
    assert remove_instances(msg, [("A", 2)]) == b"A: 1\r\nB: x\r\n  folded\r\nA: 3\r\nC: c\r\n\r\nA: body\r\n"
    assert remove_instances(msg, [("A", -1), ("b", 1)]) == b"A: 1\r\nA: 2\r\nC: c\r\n\r\nA: body\r\n"
    assert remove_instances(msg, [("A", 4), ("D", 0), ("A", -4)]) is msg
