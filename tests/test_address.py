"""Parsing of MAIL/RCPT arguments, mailboxes, domains and address literals (table-driven)."""

from __future__ import annotations

import ipaddress
import re
import string

import pytest

from proxy.smtp import address
from proxy.smtp.address import (
    PathError,
    is_valid_domain,
    is_valid_mailbox,
    is_xtext,
    parse_address_literal,
    parse_path,
)


@pytest.mark.parametrize(
    ("label", "arg", "keyword", "address", "params"),
    [
        ("plain", "FROM:<a@b.example>", "FROM", "a@b.example", {}),
        ("null sender", "FROM:<>", "FROM", "", {}),
        (
            "params",
            "FROM:<a@b.example> SIZE=100 BODY=8BITMIME",
            "FROM",
            "a@b.example",
            {"SIZE": "100", "BODY": "8BITMIME"},
        ),
        ("flag param", "FROM:<a@b.example> SMTPUTF8", "FROM", "a@b.example", {"SMTPUTF8": None}),
        ("space after colon", "FROM: <a@b.example>", "FROM", "a@b.example", {}),
        ("no brackets (lenient)", "FROM:a@b.example", "FROM", "a@b.example", {}),
        ("lower-case keyword", "to:<c@d.example>", "TO", "c@d.example", {}),
        ("quoted local part with > and space", 'TO:<"x y>z"@d.example>', "TO", '"x y>z"@d.example', {}),
        ("source route stripped", "TO:<@relay.example:c@d.example>", "TO", "c@d.example", {}),
        (
            "dsn",
            "TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example",
            "TO",
            "c@d.example",
            {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;c@d.example"},
        ),
    ],
)
def test_parse_path(label: str, arg: str, keyword: str, address: str, params: dict[str, str | None]) -> None:
    p = parse_path(arg, keyword)
    assert (p.address, p.params) == (address, params), label


@pytest.mark.parametrize(
    ("label", "arg", "keyword"),
    [
        ("wrong keyword", "TO:<a@b.example>", "FROM"),
        ("unclosed bracket", "FROM:<a@b.example", "FROM"),
        ("garbage after >", "FROM:<a@b.example>junk", "FROM"),
        ("bad parameter", "FROM:<a@b.example> =x", "FROM"),
        ("empty", "FROM:", "FROM"),
    ],
)
def test_parse_path_errors(label: str, arg: str, keyword: str) -> None:
    with pytest.raises(PathError):
        parse_path(arg, keyword)


@pytest.mark.parametrize(
    ("address", "utf8", "ok"),
    [
        ("a@b.example", False, True),
        ("first.last+tag@sub.b.example", False, True),
        ('"quoted string"@b.example', False, True),
        ("a@[192.0.2.1]", False, True),
        ("a@[IPv6:2001:db8::1]", False, True),
        ("a@[300.1.1.1]", False, False),
        ("no-at-sign", False, False),
        ("a..b@b.example", False, False),
        ("a@-bad-.example", False, False),
        ("x" * 65 + "@b.example", False, False),
        ("jörg@bücher.example", False, False),
        ("jörg@bücher.example", True, True),
    ],
)
def test_is_valid_mailbox(address: str, utf8: bool, ok: bool) -> None:
    assert is_valid_mailbox(address, utf8=utf8) is ok


def test_domains_and_literals() -> None:
    assert is_valid_domain("mx.example.org")
    assert is_valid_domain("mx.example.org.")
    assert not is_valid_domain("mx_1.example.org")
    assert not is_valid_domain("a" * 64 + ".example")
    assert parse_address_literal("[192.0.2.1]") == ipaddress.ip_address("192.0.2.1")
    assert parse_address_literal("[IPv6:::1]") == ipaddress.ip_address("::1")
    assert parse_address_literal("192.0.2.1") is None
    assert is_xtext("abc+2Bdef")
    assert not is_xtext("abc def")


def test_character_classes_cover_exactly_their_sets() -> None:
    """The classes admitting non-ASCII are written as negated ASCII classes (cheap to compile):
    over every code point they match exactly ASCII letters and digits (and '-', or the other
    atext characters of RFC 5322) plus every non-ASCII character."""
    everything = "".join(map(chr, range(0x110000)))
    alnum = set(string.ascii_letters + string.digits)
    atext = alnum | set("!#$%&'*+-/=?^_`{|}~")
    for pattern, ascii_part in ((address._U, alnum), (address._UH, alnum | {"-"}), (address._ATEXT, atext)):
        outside = "".join(chr(c) for c in range(0x80) if chr(c) not in ascii_part)
        assert re.sub(pattern, "", everything) == outside, pattern
