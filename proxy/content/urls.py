"""Links and bare host names in text and HTML, de-obfuscated and reduced to a host.

:func:`from_text` finds ``http(s)://`` and ``ftp://`` URLs, ``www.`` names and bare host names
(``example.com/path``; not file names such as ``invoice.pdf``) in plain text, one link per
distinct host. :func:`from_html` reads the document as text after decoding numeric character
references (so ``href``, ``src`` and ``action`` URLs and visible ones are found alike), then
the visible text of each ``<a>`` element (for links that show one domain and open another) and
the ``action`` of each form. Before matching, text is lower-cased and the common defangings are
undone: ``hxxp``, ``h**p``, ``[.]``, ``(.)``, ``{.}``, ``[dot]``, ``(dot)``, ``[:]``.

:func:`host_of` reduces a URL to its host the way a browser does: user info dropped
(``http://bank.example@evil.test/`` goes to ``evil.test``), backslashes read as slashes, port
and brackets removed, percent escapes decoded, IDN names to punycode, numeric IPv4 forms
(``http://3232235777/``, ``0x7f.1``) to dotted quads. Registrable domains are not computed here
(the Public Suffix List is the check's business).
"""

from __future__ import annotations

import functools
import html
import ipaddress
import re
import socket
from typing import NamedTuple
from urllib.parse import unquote

__all__ = ["Link", "from_html", "from_text", "host_of"]

# Matching runs on lower-cased text (a case-sensitive pattern is much faster in ``re``).
_DEFANG = re.compile(r"h(?:xx|\*\*)p(s?)(?=:|\[:\])|[\[({](?:\.|dot|:)[\])}]")
# Defangings by their opening character: a one-character scan is a memchr, the longer ones
# run only when that character occurs at all.
_DEFANG_HINTS = (("[", ("[.]", "[dot]", "[:]")), ("(", ("(.)", "(dot)")), ("{", ("{.}", "{dot}")))
# Each pattern starts with a literal so ``re`` skips straight to candidates (an alternation of
# the two would try every position): scheme URLs at their ``:``, then ``www.`` names.
_SCHEME_URL = re.compile(
    r""":(?:(?<=https:)|(?<=http:)|(?<=ftp:))[/\\]{2}([^\s/\\?#<>"'`]{1,300})[^\s<>"'`]{0,2000}"""
)
_WWW_URL = re.compile(r"""www\.(?<![\w.@/-]www\.)([^\s/\\?#<>"'`]{1,300})[^\s<>"'`]{0,2000}""")
_URL = re.compile(r"(?:https?:[/\\]{2}|ftp:[/\\]{2}|(?=www\.))([^\s/\\?#<>\"'`]{1,300})[^\s<>\"'`]{0,2000}")
_TLD_DOT = re.compile(r"\.[a-z]{2,24}(?![\w.-]*[\w-])")
_BARE = re.compile(r"(?<![\w.@/\\:-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})\.?\Z")
_FAST = re.compile(r"[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+")
# An <a> element: its href and up to 2000 characters of content (the visible text).
_ANCHOR = re.compile(
    r"""<a\s[^>]{0,4000}?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))[^>]{0,4000}>(.{0,2000}?)</a\b""",
    re.S,
)
_FORM = re.compile(r"<form\b([^>]{0,4000})>")
_ACTION = re.compile(r"""\baction\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_TAG = re.compile(r"<[^>]*>")
_HOST_OK = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*$")
_NUMERIC = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$")
_TRAIL = ".,;:!?)]}'\""
# File name extensions that look like top-level domains: "invoice.pdf" in text is not a host.
_FILE_TLDS = frozenset(
    [
        "exe",
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "txt",
        "zip",
        "rar",
        "gz",
        "tgz",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "bmp",
        "htm",
        "html",
        "php",
        "asp",
        "aspx",
        "js",
        "css",
        "json",
        "xml",
        "csv",
        "eml",
        "msg",
        "mov",
        "mp3",
        "mp4",
        "avi",
        "wav",
        "iso",
        "img",
        "dll",
        "sys",
        "bat",
        "cmd",
        "vbs",
        "jar",
        "py",
        "sh",
        "md",
    ]
)


class Link(NamedTuple):  # a tuple: built in bulk, cheaper than a frozen dataclass
    host: str  # lower case ASCII name, or an IP address
    url: str  # the URL as found (or its host part)
    source: str  # "text" | "html" (found in the text or markup) | "href" (an <a> with text_host)
    is_ip: bool = False
    text_host: str = ""  # for <a>: the host the visible text shows, if it shows one


def defang(text: str) -> str:
    """Undo the usual obfuscations (``hxxp``, ``[.]``...) in lower-cased text."""
    if "xxp" not in text and "**p" not in text:
        for bracket, hints in _DEFANG_HINTS:
            if bracket in text and any(h in text for h in hints):
                break
        else:
            return text
    return _DEFANG.sub(
        lambda m: f"http{m.group(1)}" if m.group(0)[0] == "h" else m.group(0)[1:-1].replace("dot", "."), text
    )


@functools.lru_cache(maxsize=8192)
def _host(authority: str) -> tuple[str, bool] | None:
    """(host, is_ip) of a URL's authority part (``user@host:port``); None when unusable."""
    host = authority.rstrip(_TRAIL).rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
        try:
            return str(ipaddress.IPv6Address(host)), True
        except ValueError:
            return None
    host = unquote(host.split(":", 1)[0]).strip().rstrip(".").lower()
    if not host:
        return None
    if _NUMERIC.match(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host)), True
        except OSError:
            return None
    if _FAST.fullmatch(host) is None:
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        if not _HOST_OK.match(host):
            return None
    if "." not in host or len(host) > 253:
        return None
    return host, False


def host_of(url: str) -> tuple[str, bool] | None:
    """(host, is_ip) of a URL or bare name; None when there is no usable host."""
    rest = url.strip().replace("\\", "/")
    scheme_end = rest.find("://")
    if 0 < scheme_end <= 6:
        rest = rest[scheme_end + 3 :]
    elif rest[:4].lower() != "www." and ":" in rest.split("/", 1)[0] and not rest[:1].isdigit():
        return None  # mailto:, javascript:, cid: ...
    return _host(re.split(r"[/?#]", rest, maxsplit=1)[0])


def from_text(text: str, source: str = "text", *, lowered: bool = False) -> list[Link]:
    """The distinct hosts of the links and bare names in plain text, in order of appearance
    (scheme URLs, then ``www.`` names, then bare names). ``Link.url`` is the host part.
    ``lowered``: the text is lower case and defanged already."""
    low = text if lowered else defang(text.lower())
    pieces = _SCHEME_URL.split(low)  # text, authority, text, authority, ... in one pass
    authorities = pieces[1::2]
    rest = " ".join(pieces[0::2]) if authorities else low
    if "www." in rest:
        pieces = _WWW_URL.split(rest)
        authorities += ["www." + a for a in pieces[1::2]]
        rest = " ".join(pieces[0::2])
    found: dict[str, Link] = {}
    for authority in dict.fromkeys(authorities):
        host = _host(authority)
        if host is not None and host[0] not in found:
            found[host[0]] = Link(host[0], authority, source, host[1])
    for m in _TLD_DOT.finditer(rest):
        if m.group(0)[1:] in _FILE_TLDS:
            continue
        bare = _BARE.search(rest, max(0, m.start() - 254), m.end())
        if bare is None:
            continue
        host = _host(bare.group(1))
        if host is not None and host[0] not in found:
            found[host[0]] = Link(host[0], bare.group(1), source, host[1])
    return list(found.values())


def from_html(doc: str) -> tuple[list[Link], list[str]]:
    """(links, form actions) of an HTML part, lower-cased.

    The document is read as text (numeric character references decoded first: ``&#104;ttp``),
    so attribute URLs and visible ones are found alike (source ``html``). Then each ``<a>``
    whose visible text shows a host name adds a link (source ``href``) with ``text_host`` set,
    for the phishing check; each ``<form>`` adds its action (``""`` when it has none)."""
    low = doc.lower()
    if "&#" in low:
        low = html.unescape(low)
    low = defang(low)
    links = from_text(low, "html", lowered=True)
    for dq, sq, bare, visible in _ANCHOR.findall(low) if "<a" in low else ():
        if "." not in visible:
            continue
        shown = from_text(
            html.unescape(_TAG.sub(" ", visible)) if "<" in visible or "&" in visible else visible
        )
        if not shown:
            continue
        url = (dq or sq or bare).strip()
        found = host_of(defang(html.unescape(url) if "&" in url else url))
        if found is not None:
            links.append(Link(found[0], url, "href", found[1], shown[0].host))
    forms = []
    for attrs in _FORM.findall(low) if "<form" in low else ():
        action = _ACTION.search(attrs)
        forms.append(html.unescape(next((g for g in action.groups() if g is not None), "")) if action else "")
    return links, forms
