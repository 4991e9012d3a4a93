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

import html
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Link", "from_html", "from_text", "host_of"]

_DEFANG = re.compile(r"(?i)h(?:xx|\*\*)p(s?)(?=:|\[:\])|\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\[:\]")
_DEFANG_MAP = {"[.]": ".", "(.)": ".", "{.}": ".", "[dot]": ".", "(dot)": ".", "[:]": ":"}
_URL = re.compile(r"(?i)\b(?:(?:https?|ftp):(?://|\\\\)|www\.)[^\s<>\"'`]{1,2000}")
_BARE = re.compile(
    r"(?i)(?<![\w.@/-])((?:[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\.)+[a-z]{2,24})(?=[/:\s,;)>\]\"']|$)"
)
_ATTR = re.compile(r"""(?is)<(a|area|img|link|form|iframe|frame|script|base)\b([^>]{0,4000})>""")
_VALUE = re.compile(r"""(?is)\b(href|src|action)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_ANCHOR = re.compile(r"(?is)<a\b([^>]{0,4000})>(.{0,2000}?)</a\s*>")
_TAG = re.compile(r"(?s)<[^>]*>")
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
    """Undo the usual obfuscations (``hxxp``, ``[.]``...)."""
    if not _DEFANG.search(text):
        return text
    return _DEFANG.sub(
        lambda m: f"http{m.group(1)}" if m.group(0)[0] in "hH" else _DEFANG_MAP[m.group(0).lower()], text
    )


def host_of(url: str) -> tuple[str, bool] | None:
    """(host, is_ip) of a URL or bare name; None when there is no usable host."""
    rest = url.strip().replace("\\", "/")
    scheme_end = rest.find("://")
    if 0 < scheme_end <= 6:
        rest = rest[scheme_end + 3 :]
    elif rest[:4].lower() != "www." and ":" in rest.split("/", 1)[0] and not rest[:1].isdigit():
        return None  # mailto:, javascript:, cid: ...
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = authority.rsplit("@", 1)[-1]
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
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if "." not in host or len(host) > 253 or not _HOST_OK.match(host):
        return None
    return host, False


def _clean(match: str) -> str:
    url = match.rstrip(_TRAIL)
    if url.count("(") < url.count(")"):
        url = url[: url.rfind(")")]
    return url


def from_text(text: str, source: str = "text") -> list[Link]:
    """Links and bare names in plain text, in order of appearance (duplicates kept)."""
    text = defang(text)
    out: list[Link] = []
    spans: list[tuple[int, int]] = []
    for m in _URL.finditer(text):
        url = _clean(m.group(0))
        found = host_of(url)
        spans.append((m.start(), m.start() + len(url)))
        if found:
            out.append(Link(found[0], url, source, found[1]))
    for m in _BARE.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        name = m.group(1).lower()
        if name.rsplit(".", 1)[1] in _FILE_TLDS:
            continue
        found = host_of(name)
        if found:
            out.append(Link(found[0], name, source))
    return out


def _attr_value(m: re.Match[str]) -> str:
    return html.unescape(m.group(2) if m.group(2) is not None else m.group(3) or m.group(4) or "")


def from_html(doc: str) -> tuple[list[Link], list[str]]:
    """(links, form actions) of an HTML part. Each ``<a href>`` link carries ``text_host`` when
    its visible text shows a host name of its own."""
    links: list[Link] = []
    forms: list[str] = []
    shown: dict[str, str] = {}
    for m in _ANCHOR.finditer(doc):
        target = next((v for v in _VALUE.finditer(m.group(1)) if v.group(1).lower() == "href"), None)
        if target is None:
            continue
        visible = html.unescape(_TAG.sub(" ", m.group(2))).strip()
        hosts = from_text(visible) if "." in visible else []
        if hosts:
            shown[_attr_value(target).strip()] = hosts[0].host
    for m in _ATTR.finditer(doc):
        tag = m.group(1).lower()
        values = list(_VALUE.finditer(m.group(2)))
        if tag == "form":
            action = next((_attr_value(v) for v in values if v.group(1).lower() == "action"), "")
            forms.append(action.strip())
        for v in values:
            url = _attr_value(v).strip()
            found = host_of(defang(url))
            if found:
                text_host = shown.get(url, "") if tag == "a" else ""
                links.append(Link(found[0], url, v.group(1).lower(), found[1], text_host))
    text = html.unescape(_TAG.sub(" ", doc)) if "<" in doc else doc
    links += from_text(text)
    return links, forms
