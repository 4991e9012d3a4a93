"""The Authentication-Results header field (RFC 8601) spamgate adds, rendered from the results.

``render(authserv_id, results)`` folds one method result per line::

    Authentication-Results: mx.example.net;
        iprev=pass policy.iprev=192.0.2.7 (mail.example.org);
        spf=pass smtp.mailfrom=alice@example.org;
        dkim=pass header.d=example.org header.s=sel header.a=rsa-sha256;
        dmarc=pass (p=reject dis=none) header.from=example.org;
        arc=none

Values that are not a plain token or ``local-part@domain`` are written as quoted strings;
comments are stripped of parentheses and control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_ADDR = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]*@[A-Za-z0-9.\-]+$")
_CTRL = re.compile(r"[\x00-\x1f\x7f()\\]")


def value(v: str) -> str:
    """A pvalue: token, local-part@domain, else a quoted-string."""
    if _TOKEN.match(v) or _ADDR.match(v):
        return v
    return '"' + _CTRL.sub("", v).replace('"', "'") + '"'


def comment(text: str) -> str:
    clean = _CTRL.sub("", text).strip()
    return f" ({clean})" if clean else ""


def method(
    name: str, result: str, props: Iterable[tuple[str, str]] = (), note: str = "", reason: str = ""
) -> str:
    out = f"{name}={result}" + comment(note)
    if reason:
        out += f" reason={value(reason)}"
    for k, v in props:
        if v:
            out += f" {k}={value(v)}"
    return out


def render(authserv_id: str, results: list[str]) -> str:
    """The header *value* (without the field name), folded one result per line."""
    if not results:
        return f"{authserv_id}; none"
    return f"{authserv_id};\r\n\t" + ";\r\n\t".join(results)
