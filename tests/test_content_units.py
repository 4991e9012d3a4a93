"""The content analysis without SMTP: link extraction, magic bytes, the bounded MIME walk and
archive listing, on messages and archives built in the test (zipfile/tarfile/gzip in memory)."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import tarfile
import time
import zipfile

import pytest

from proxy.content import archives, magic, mime, urls
from proxy.content.analyse import Bounds, analyse

PE = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(56)
ELF = b"\x7fELF\x02\x01\x01" + bytes(57)


# -- links --------------------------------------------------------------------------------------

TEXT_CASES = [
    ("plain url", "see https://www.shop.example/offer?id=1 now", {"www.shop.example"}),
    ("www without scheme", "visit www.Shop.Example.", {"www.shop.example"}),
    ("bare host", "go to portal.example.org/login today", {"portal.example.org"}),
    ("mixed case scheme", "HTTPS://MiXeD.Example/X", {"mixed.example"}),
    ("hxxp and [.]", "hxxps://evil[.]example/x", {"evil.example"}),
    ("(dot) and (.)", "hxxp://bad(dot)example(.)org/", {"bad.example.org"}),
    ("user info trick", "http://bank.example@evil.test/login", {"evil.test"}),
    ("backslashes", r"http:\\evil.test\path", {"evil.test"}),
    ("port", "http://host.example:8080/x", {"host.example"}),
    ("percent-encoded host", "http://%65vil.test/", {"evil.test"}),
    ("idn", "http://bücher.example/", {"xn--bcher-kva.example"}),
    ("decimal ip", "http://3232235777/x", {"192.168.1.1"}),
    ("hex and short ip", "http://0x7f.1/", {"127.0.0.1"}),
    ("ipv6", "http://[2001:db8::1]:80/", {"2001:db8::1"}),
    ("trailing punctuation", "(see http://a.example/b).", {"a.example"}),
    ("file names are not hosts", "open invoice.pdf and setup.exe", set()),
    ("mail address is not a link", "write to bob@example.com", set()),
    ("mailto and javascript", "mailto:x@y.example javascript:alert(1)", set()),
    ("host inside a url path", "https://a.example/www.b.example/", {"a.example"}),
]


@pytest.mark.parametrize(("label", "text", "want"), TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_links_in_text(label: str, text: str, want: set[str]) -> None:
    assert {link.host for link in urls.from_text(text)} == want


HTML_CASES = [
    (
        "href with character references",
        '<a href="&#104;ttp://ok.example/a?x=1&amp;y=2">here</a>',
        {("ok.example", "html", "")},
        0,
    ),
    (
        "visible text shows another domain",
        '<A HREF="http://evil.test/login">https://www.paypal.com/</A>',
        {("evil.test", "html", ""), ("www.paypal.com", "html", ""), ("evil.test", "href", "www.paypal.com")},
        0,
    ),
    (
        "visible text inside markup",
        '<a href="http://evil.test/"><b>Login at</b> <i>bank&#46;example</i></a>',
        {("evil.test", "html", ""), ("bank.example", "html", ""), ("evil.test", "href", "bank.example")},
        0,
    ),
    ("img src", "<img src='http://img.example/p.gif'>", {("img.example", "html", "")}, 0),
    (
        "form action",
        '<form method="post" action="https://steal.test/x"><input name=p></form>',
        {("steal.test", "html", "")},
        1,
    ),
    ("form without action", "<form><input></form>", set(), 1),
    ("text link in html", "<p>Visit www.site.example today</p>", {("www.site.example", "html", "")}, 0),
    ("relative and cid links", '<a href="/x">a</a><img src="cid:part1">', set(), 0),
    ("stylesheet names are not hosts", '<link href="style.css"><script src="app.min.js">', set(), 0),
]


@pytest.mark.parametrize(("label", "doc", "want", "forms"), HTML_CASES, ids=[c[0] for c in HTML_CASES])
def test_links_in_html(label: str, doc: str, want: set[tuple[str, str, str]], forms: int) -> None:
    links, found_forms = urls.from_html(doc)
    assert {(link.host, link.source, link.text_host) for link in links} == want
    assert len(found_forms) == forms


# -- magic bytes --------------------------------------------------------------------------------

MAGIC_CASES = [
    ("pe", PE, "pe"),
    ("MZ text is not a program", b"MZ Corp quarterly report", ""),
    ("elf", ELF, "elf"),
    ("mach-o", b"\xcf\xfa\xed\xfe" + bytes(20), "macho"),
    ("lnk", b"L\x00\x00\x00\x01\x14\x02\x00" + bytes(20), "lnk"),
    ("pdf", b"%PDF-1.7\n", "pdf"),
    ("pdf after junk", b"\r\n\r\n%PDF-1.4", "pdf"),
    ("zip", b"PK\x03\x04" + bytes(26), "zip"),
    ("gzip", gzip.compress(b"x"), "gzip"),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(8), "png"),
    ("jpeg", b"\xff\xd8\xff\xe0", "jpeg"),
    ("ole", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    ("html", b"  <!DOCTYPE html><html>", "html"),
    ("text", b"hello world", ""),
]


@pytest.mark.parametrize(("label", "data", "want"), MAGIC_CASES, ids=[c[0] for c in MAGIC_CASES])
def test_magic_detection(label: str, data: bytes, want: str) -> None:
    assert magic.detect(data) == want


@pytest.mark.parametrize(
    ("kind", "ctype", "name", "want"),
    [
        ("pe", "application/pdf", "invoice.pdf", "pdf"),  # the extension speaks first
        ("zip", "image/jpeg", "photo", "image/jpeg"),
        ("pdf", "application/pdf", "a.pdf", ""),
        ("zip", "application/octet-stream", "report.docx", ""),  # OOXML is a zip
        ("pe", "application/octet-stream", "blob", ""),  # says nothing checkable
        ("", "application/pdf", "a.pdf", ""),  # unknown content never contradicts
    ],
)
def test_declared_type_contradictions(kind: str, ctype: str, name: str, want: str) -> None:
    assert magic.contradicts(kind, ctype, name) == want


# -- MIME walk ----------------------------------------------------------------------------------


def multipart(parts: list[str], boundary: str = "b1", close: bool = True) -> bytes:
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + (f"--{boundary}--\r\n" if close else "")
    head = "From: a@sender.test\r\nMIME-Version: 1.0\r\n"
    head += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
    return (head + "\r\n" + body).encode()


def test_walk_decodes_parts_and_names() -> None:
    """Base64 and quoted-printable bodies are decoded; RFC 2231 and RFC 2047 names are read."""
    msg = multipart(
        [
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            "caf=C3=A9 http://qp.example/",
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
            " filename*0*=utf-8''fac%C3; filename*1*=%A9ture.exe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(PE).decode(),
            'Content-Type: application/pdf; name="=?utf-8?B?cmVwb3J0LnBkZg==?="\r\n\r\n%PDF-1.4',
        ]
    )
    walked = mime.walk(msg)
    assert walked.problems == {}
    leaves = [p for p in walked.parts if not p.is_multipart]
    assert leaves[0].body == "café http://qp.example/".encode()
    assert leaves[1].filename == "facéture.exe"  # a UTF-8 sequence split over segments
    assert leaves[1].body == PE
    assert leaves[2].filename == "report.pdf"


@pytest.mark.parametrize(
    ("label", "msg", "problem"),
    [
        (
            "no closing delimiter",
            multipart(["Content-Type: text/plain\r\n\r\nx"], close=False),
            "bad_boundary",
        ),
        (
            "boundary never occurs",
            multipart(["Content-Type: text/plain\r\n\r\nx"]).replace(b"--b1", b"--zz"),
            "bad_boundary",
        ),
        (
            "no boundary parameter",
            b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nx\r\n--x--\r\n",
            "bad_boundary",
        ),
    ],
)
def test_walk_reports_bad_boundaries(label: str, msg: bytes, problem: str) -> None:
    assert problem in mime.walk(msg).problems


def nested(depth: int) -> bytes:
    inner = "Content-Type: text/plain\r\n\r\ndeep"
    for i in range(depth):
        inner = f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n{inner}\r\n--n{i}--'
    return ("From: a@sender.test\r\n" + inner + "\r\n").encode()


def test_mime_bombs_are_bounded_and_quick() -> None:
    """1000 levels of nesting and 20 000 parts: the walk stops at its bounds, in milliseconds."""
    t0 = time.monotonic()
    deep = mime.walk(nested(1000), mime.Limits(max_depth=16))
    wide = mime.walk(multipart(["Content-Type: text/plain\r\n\r\nx"] * 20_000), mime.Limits(max_parts=1000))
    took = time.monotonic() - t0
    assert deep.problems["too_deep"] == ">16"
    assert deep.depth == 16
    assert wide.problems["too_many_parts"] == ">1000"
    assert len(wide.parts) == 1000
    assert took < 1.0, took


def test_decode_budget_leaves_big_parts_undecoded() -> None:
    msg = multipart(
        [
            "Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(bytes(3000)).decode()
        ]
    )
    walked = mime.walk(msg, mime.Limits(max_decoded=1000))
    assert walked.problems["decode_limit"] == ">1000"
    assert analyse(msg, Bounds(mime.Limits(max_decoded=1000))).attachments[0].decoded is False


# -- archives -----------------------------------------------------------------------------------


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def encrypt_flag(data: bytes) -> bytes:
    """Set bit 0 (encrypted) of every entry's flags, in local headers and central directory."""
    out = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            flags = struct.unpack_from("<H", out, pos + offset)[0]
            struct.pack_into("<H", out, pos + offset, flags | 1)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def tar_of(members: dict[str, bytes], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def listing(data: bytes, name: str, **budget: int) -> archives.Listing:
    return archives.inspect(data, magic.detect(data), name, archives.Budget(**budget))


def test_zip_members_nested_and_sniffed() -> None:
    """Members of a zip in a zip are listed with their path; a program named .pdf is seen."""
    inner = zip_of({"invoice.pdf": PE, "readme.txt": b"hello"})
    found = listing(zip_of({"docs/inner.zip": inner, "a.csv": b"1,2"}), "outer.zip")
    by_path = {m.path: m.kind for m in found.members}
    assert by_path["outer.zip/docs/inner.zip/invoice.pdf"] == "pe"
    assert by_path["outer.zip/docs/inner.zip/readme.txt"] == ""
    assert "outer.zip/a.csv" in by_path
    assert found.problems == []
    assert not found.encrypted


def test_encrypted_zip_entry() -> None:
    found = listing(encrypt_flag(zip_of({"secret.exe": PE})), "locked.zip")
    assert found.encrypted
    assert [m.name for m in found.members] == ["secret.exe"]
    assert found.members[0].encrypted
    assert found.members[0].kind == ""


def test_tar_gzip_and_gz() -> None:
    long = "dir/" + "x" * 120 + ".scr"
    found = listing(tar_of({long: ELF, "ok.txt": b"hi"}, compress=True), "bundle.tgz")
    assert {(m.name, m.kind) for m in found.members} == {(long.rsplit("/", 1)[1], "elf"), ("ok.txt", "")}
    single = listing(gzip.compress(PE), "setup.exe.gz")
    assert [(m.name, m.kind) for m in single.members] == [("setup.exe", "pe")]


def test_archive_bounds() -> None:
    """Depth, member count and decompressed size stop the reader, each with a reason."""
    level = zip_of({"evil.exe": PE})
    for i in range(5):
        level = zip_of({f"l{i}.zip": level})
    assert any(p.endswith(":depth") for p in listing(level, "deep.zip", depth=3).problems)
    many = listing(zip_of({f"f{i}.txt": b"x" for i in range(50)}), "many.zip", max_members=10)
    assert len(many.members) == 10
    assert "many.zip:members>10" in many.problems
    bomb = gzip.compress(bytes(50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KB
    t0 = time.monotonic()
    found = listing(bomb, "bomb.gz", bytes=1024 * 1024)
    assert "bomb.gz:size" in found.problems
    assert time.monotonic() - t0 < 1.0
    assert listing(b"PK\x03\x04 not really a zip", "bad.zip").problems == ["bad.zip:corrupt"]


def test_malformed_archives_never_raise() -> None:
    """Truncated and bit-flipped archives are listed as far as they read, never an exception."""
    seeds = [
        zip_of({"a.txt": b"x" * 100, "b/c.exe": PE}),
        encrypt_flag(zip_of({"s.txt": b"y"})),
        tar_of({"d/e.txt": b"z" * 700}),
        tar_of({"f.bin": ELF}, compress=True),
    ]
    for seed in seeds:
        kind = magic.detect(seed)
        for cut in range(0, len(seed), max(1, len(seed) // 40)):
            archives.inspect(seed[:cut], kind, "cut", archives.Budget())
        for pos in range(0, len(seed), max(1, len(seed) // 60)):
            flipped = bytearray(seed)
            flipped[pos] ^= 0xFF
            archives.inspect(bytes(flipped), kind, "flip", archives.Budget())
    msg = multipart(
        [
            "Content-Type: text/html\r\n\r\n<a href='http://x.example/'>y.example</a>",
            "Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(seeds[0]).decode(),
        ]
    )
    for cut in range(0, len(msg), 7):
        analyse(msg[:cut])


def test_text_bound_stops_link_scanning_not_attachments() -> None:
    """Past max_text, text parts are not scanned for links (``truncated`` says so), and an HTML
    attachment past it is still an attachment."""
    msg = multipart(
        [
            "Content-Type: text/plain\r\n\r\n" + "x" * 200 + " http://first.example/",
            "Content-Type: text/plain\r\n\r\nhttp://second.example/",
            'Content-Type: text/html; name="form.html"\r\n\r\n<form action="http://x.example/"></form>',
        ]
    )
    found = analyse(msg, Bounds(max_text=100))
    assert found.links == []
    assert found.truncated == "text>100"
    assert [a.filename for a in found.attachments] == ["form.html"]
    assert {link.host for link in analyse(msg).links} == {"first.example", "second.example", "x.example"}
