"""Parsing of SMTP paths, parameters, domains and address literals (RFC 5321 4.1.2, 4.1.3).

Fast and strict where it matters: aiosmtpd's parser costs ~170 µs an address (it goes through
``email._header_value_parser``); this one is a few regexes. Lenient where real MTAs are:
a space after ``FROM:`` and a missing ``<>`` around the path are accepted, as Postfix does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_DOMAIN_LABEL = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
_DOMAIN_RE = re.compile(rf"^{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*\.?$")
# U-labels (SMTPUTF8): any non-ASCII character is allowed inside a label. The classes that
# admit non-ASCII are written as "none of the ASCII characters outside the class": the same sets
# as [A-Za-z0-9\u0080-\U0010ffff] (and with '-'), but a class with a range up to U+10FFFF costs
# the re compiler ~50 ms at every start (tests/test_address.py checks every code point).
_U = r"[^\x00-/:-@\[-`{-\x7f]"  # a letter, a digit or any non-ASCII character
_UH = r"[^\x00-,./:-@\[-`{-\x7f]"  # the same or '-'
_UDOMAIN_LABEL = rf"(?:{_U}(?:{_UH}{{0,61}}{_U})?)"
_UDOMAIN_RE = re.compile(rf"^{_UDOMAIN_LABEL}(?:\.{_UDOMAIN_LABEL})*$")
# atext (RFC 5322 3.2.3: letters, digits, !#$%&'*+-/=?^_`{|}~) or any non-ASCII character (RFC 6531).
_ATEXT = r"[^\x00-\x20\x22(),.:-<>@\[-\]\x7f]"
_DOT_ATOM_RE = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*$")
_QUOTED_RE = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"$')
_XTEXT_RE = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")
_PARAM_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_PART_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


class PathError(ValueError):
    """The argument of MAIL or RCPT cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed reverse- or forward-path. ``address`` is ``""`` for the null path ``<>``."""

    address: str
    params: dict[str, str | None]
    raw_params: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower() if "@" in self.address else ""

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


def parse_path(arg: str, keyword: str) -> Path:
    """Parse ``FROM:<a@b> SIZE=10`` (keyword ``FROM``) or ``TO:<a@b> NOTIFY=NEVER``."""
    head = arg[: len(keyword) + 1]
    if head.upper() != keyword + ":":
        raise PathError(f"expected {keyword}:<address>")
    rest = arg[len(keyword) + 1 :].lstrip(" ")
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        path, params = rest[1:end], rest[end + 1 :]
        if params and not params.startswith(" "):
            raise PathError("garbage after the address")
    else:
        path, _, params = rest.partition(" ")
        if not path or "<" in path or ">" in path:
            raise PathError("missing <address>")
    if _CONTROL_RE.search(path) or " " in _QUOTED_PART_RE.sub("", path):
        # A CR, NUL or space in an address would reach the downstream and our headers.
        raise PathError("control character or space in the address")
    if path.startswith("@"):  # obsolete source route "@a,@b:user@c" (RFC 5321 4.1.2, C)
        colon = path.find(":")
        if colon < 0:
            raise PathError("bad source route")
        path = path[colon + 1 :]
    return Path(path, parse_params(params), params.strip())


def _closing_bracket(s: str) -> int:
    quoted = escaped = False
    for i in range(1, len(s)):
        c = s[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
    raise PathError("missing closing '>'")


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _PARAM_KEY_RE.match(key):
            raise PathError(f"bad parameter {item!r}")
        params[key.upper()] = value if eq else None
    return params


def is_valid_domain(domain: str, *, utf8: bool = False) -> bool:
    if not domain or len(domain) > 255:
        return False
    if _DOMAIN_RE.match(domain):
        return True
    return utf8 and bool(_UDOMAIN_RE.match(domain))


def parse_address_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` -> the address; anything else -> None."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    try:
        if inner[:5].upper() == "IPV6:":
            return ipaddress.IPv6Address(inner[5:])
        return ipaddress.IPv4Address(inner)
    except ValueError:
        return None


def looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_valid_mailbox(address: str, *, utf8: bool = False) -> bool:
    """RFC 5321 Mailbox: Local-part "@" ( Domain / address-literal )."""
    local, at, domain = address.rpartition("@")
    if not at or not local or len(local) > 64 or len(address) > 254:
        return False
    if not (_DOT_ATOM_RE.match(local) or _QUOTED_RE.match(local)):
        return False
    if not utf8 and not local.isascii():
        return False
    if domain.startswith("["):
        return parse_address_literal(domain) is not None
    return is_valid_domain(domain, utf8=utf8)


def is_xtext(value: str) -> bool:
    return bool(_XTEXT_RE.match(value))
