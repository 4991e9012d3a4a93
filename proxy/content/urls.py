"""Links and bare host names in text and HTML, de-obfuscated and reduced to a host.

:func:`from_text` finds ``http(s)://`` and ``ftp://`` URLs, ``www.`` names and bare host names
(``example.com/path``) in plain text; :func:`from_html` reads ``href``, ``src`` and form
``action`` attributes (entities decoded), the visible text of each ``<a>`` element, and the
text of the document. Before matching, the common defangings are undone: ``hxxp``, ``[.]``,
``(.)``, ``{.}``, ``[dot]``, ``[:]``, mixed case.

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
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Link", "from_html", "from_text", "host_of"]

# Matching runs on lower-cased text (a case-sensitive pattern is much faster in ``re``).
_DEFANG = re.compile(r"h(?:xx|\*\*)p(s?)(?=:|\[:\])|[\[({](?:\.|dot|:)[\])}]")
_DEFANG_HINTS = ("hxxp", "h**p", "[.]", "(.)", "{.}", "[dot]", "(dot)", "[:]")
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
# The first href/src/action of each tag that may carry a link (one pattern, led by "<").
_ATTR = re.compile(
    r"""<(a|area|img|link|form|iframe|frame|base)\s[^>]{0,4000}?\b(href|src|action)\s*=\s*"""
    r"""(?:"([^"]*)"|'([^']*)'|([^\s>]+))"""
)
_FORM = re.compile(r"<form\b")
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


@dataclass(frozen=True, slots=True)
class Link:
    host: str  # lower case ASCII name, or an IP address
    url: str
    source: str  # "href" | "src" | "action" | "text"
    is_ip: bool = False
    text_host: str = ""  # for <a>: the host the visible text shows, if it shows one


def defang(text: str) -> str:
    """Undo the usual obfuscations (``hxxp``, ``[.]``...) in lower-cased text."""
    if not any(h in text for h in _DEFANG_HINTS):
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


def from_text(text: str, source: str = "text") -> list[Link]:
    """The distinct hosts of the links and bare names in plain text, in order of appearance
    (scheme URLs, then ``www.`` names, then bare names). ``Link.url`` is the host part."""
    low = defang(text.lower())
    authorities = _SCHEME_URL.findall(low)
    authorities += ["www." + a for a in _WWW_URL.findall(low)]
    found: dict[str, Link] = {}
    for authority in dict.fromkeys(authorities):
        host = _host(authority)
        if host is not None and host[0] not in found:
            found[host[0]] = Link(host[0], authority, source, host[1])
    rest = _WWW_URL.sub(" ", _SCHEME_URL.sub(" ", low)) if authorities else low
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
    """(links, form actions) of an HTML part. Each ``<a href>`` link carries ``text_host`` when
    its visible text shows a host name of its own. URLs come back lower-cased."""
    low = doc.lower()
    links: list[Link] = []
    forms: list[str] = []
    for m in _ATTR.finditer(low):
        tag, attr = m.group(1), m.group(2)
        raw = m.group(3) if m.group(3) is not None else m.group(4) or m.group(5) or ""
        if tag == "form":
            forms.append(raw)
        fast = _URL.match(raw)
        if fast is not None and "&" not in fast.group(1):
            url, found = raw, _host(fast.group(1))
        else:
            url = (html.unescape(raw) if "&" in raw else raw).strip()
            found = host_of(defang(url))
        if found is None:
            continue
        text_host = ""
        if tag == "a" and attr == "href":
            open_end = low.find(">", m.end())
            close = low.find("</a", open_end, open_end + 2000) if open_end > 0 else -1
            visible = low[open_end + 1 : close] if close > 0 else ""
            if "." in visible:
                shown = from_text(html.unescape(_TAG.sub(" ", visible)))
                text_host = shown[0].host if shown else ""
        links.append(Link(found[0], url, attr, found[1], text_host))
    forms += [""] * (len(_FORM.findall(low)) - len(forms))  # forms without an action
    text = _TAG.sub(" ", low) if "<" in low else low
    links += from_text(html.unescape(text) if "&" in text else text)
    return links, forms
