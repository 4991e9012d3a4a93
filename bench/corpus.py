"""A deterministic mixed mail corpus for the content inspection workload (bench/content_load.py).

``build(n, seed)`` returns ``n`` messages (bytes, CRLF lines, headers without Message-ID:
bench/loadgen.py's ``--message-id`` adds a unique one per send) of four kinds, in fixed
proportions and a seeded shuffled order; the same ``(n, seed)`` gives the same bytes.

| kind | share | what | size |
|---|---|---|---|
| ``text`` | 40 % | text/plain, quoted-printable, a signature with one link | 2-4 KB |
| ``html`` | 30 % | newsletter: multipart/alternative (text + HTML table), ~65 links, 12-30 domains | ~20 KB |
| ``attach`` | 25 % | multipart/mixed: short text + one attachment in turn: PDF-like | 8-80 KB |
| | | blob, zip of 4-6 members (csv, jpg, txt, pdfs), docx-like zip (OOXML members) | |
| ``large`` | 5 % | multipart/mixed: text + one ~770 KB base64 attachment (JPEG- or PDF-like) | ~1 MiB |

Nothing in it is meant to be caught: no dangerous extension, no program, no lying link, no
form, no bare-IP link, consistent types and magic bytes, no virus signature, so every message
should be accepted (250) by spamgate with every content check and both scanners on. Link
domains come from a pool of 400 (``site<k>.example``, ``news<k>.example.com``...), so a
resolver cache sees repeats as it would. The blobs are seeded pseudo-random bytes
(incompressible, like real PDFs, photos and archives).

    .venv/bin/python bench/corpus.py [N] [--seed S] [--out DIR]   # sizes by kind; --out: .eml files
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import io
import quopri
import random
import zipfile
from pathlib import Path

KINDS = ("text", "html", "attach", "large")
SHARES = {"text": 0.40, "html": 0.30, "attach": 0.25, "large": 0.05}
RCPT = "bar@bench.test"
DOMAINS = [
    f"{p}{k}.{tld}"
    for k in range(100)
    for p, tld in (
        ("site", "example"),
        ("news", "example.com"),
        ("shop", "example.net"),
        ("mail", "example.org"),
    )
]
WORDS = [
    "the",
    "quarterly",
    "figures",
    "meeting",
    "report",
    "project",
    "customer",
    "update",
    "invoice",
    "delivery",
    "schedule",
    "team",
    "review",
    "budget",
    "office",
    "market",
    "product",
    "service",
    "account",
    "order",
    "please",
    "attached",
    "find",
    "below",
    "thanks",
    "regards",
    "next",
    "week",
    "monday",
    "friday",
    "agenda",
    "notes",
    "draft",
    "final",
    "version",
    "contract",
    "offer",
    "price",
]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _paragraphs(rng: random.Random, size: int) -> str:
    """About ``size`` characters of plain text in lines under 78 characters."""
    out: list[str] = []
    total = 0
    while total < size:
        line = _words(rng, rng.randint(6, 11)).capitalize() + "."
        out.append(line)
        total += len(line) + 2
        if rng.random() < 0.15:
            out.append("")
    return "\r\n".join(out) + "\r\n"


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).replace(b"\n", b"\r\n").decode()


def _head(rng: random.Random, i: int, kind: str, content_type: str, extra: str = "") -> str:
    d = rng.choice(DOMAINS)
    user = rng.choice(("anna", "ben", "chloe", "dmitri", "eva", "farid", "news", "billing"))
    date = email.utils.formatdate(_DATE[0] - 60 * i)  # a minute apart, back from the build's date
    return (
        f"From: {user.capitalize()} <{user}@{d}>\r\n"
        f"To: <{RCPT}>\r\n"
        f"Subject: {_words(rng, 4).capitalize()} ({kind} {i})\r\n"
        f"Date: {date}\r\n"
        f"MIME-Version: 1.0\r\n{extra}"
        f"Content-Type: {content_type}\r\n"
    )


def text_message(rng: random.Random, i: int) -> bytes:
    d = rng.choice(DOMAINS)
    body = _paragraphs(rng, rng.randint(1800, 3600)) + f"\r\n-- \r\nSent from https://www.{d}/about\r\n"
    qp = quopri.encodestring(body.replace("\r\n", "\n").encode()).replace(b"\n", b"\r\n")
    head = _head(rng, i, "text", "text/plain; charset=utf-8", "")
    return (head + "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + qp


def html_message(rng: random.Random, i: int, size: int = 20_000) -> bytes:
    domains = rng.sample(DOMAINS, rng.randint(12, 30))
    rows, text = [], []
    k = 0
    while sum(map(len, rows)) + sum(map(len, text)) + 900 < size and k < 70:
        d = domains[k % len(domains)]
        url = f"https://www.{d}/item/{rng.randint(1000, 99999)}?utm_source=mail&amp;ref={i}"
        label = _words(rng, 3).title()
        rows.append(
            f'<tr><td style="padding:4px"><a href="{url}">{label}</a></td>'
            f"<td>{_words(rng, rng.randint(8, 14)).capitalize()}.</td></tr>\r\n"
        )
        text.append(f"{label}: {url.replace('&amp;', '&')}\r\n  {_words(rng, 8)}\r\n")
        k += 1
    html = (
        '<!DOCTYPE html>\r\n<html><head><meta charset="utf-8"><title>Newsletter</title></head>\r\n'
        '<body><h1>This week</h1>\r\n<table width="600">\r\n' + "".join(rows) + "</table>\r\n"
        f'<p><a href="https://www.{domains[0]}/unsubscribe?u={i}">Unsubscribe</a></p></body></html>\r\n'
    )
    b = f"alt-{i:06d}-{rng.getrandbits(32):08x}"
    body = (
        f"This is a multi-part message in MIME format.\r\n\r\n--{b}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + "".join(text) + f"\r\n--{b}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + f"\r\n--{b}--\r\n"
    )
    return (_head(rng, i, "html", f'multipart/alternative; boundary="{b}"') + "\r\n" + body).encode()


def pdf_blob(rng: random.Random, size: int) -> bytes:
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    stream = b"4 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % size
    return head + stream + rng.randbytes(size) + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def jpeg_blob(rng: random.Random, size: int) -> bytes:
    return (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + rng.randbytes(size)
        + b"\xff\xd9"
    )


def zip_blob(rng: random.Random) -> bytes:
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
        members = [
            (
                "figures.csv",
                "".join(f"{r},{rng.randint(0, 9999)},{rng.random():.4f}\n" for r in range(400)).encode(),
            ),
            ("photo.jpg", jpeg_blob(rng, rng.randint(8_000, 30_000))),
            ("notes.txt", _paragraphs(rng, 3000).encode()),
        ]
        members += [
            (f"appendix{j}.pdf", pdf_blob(rng, rng.randint(3_000, 9_000))) for j in range(rng.randint(0, 2))
        ]
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, (2026, 12, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return outer.getvalue()


def docx_blob(rng: random.Random) -> bytes:
    paras = "".join(
        f"<w:p><w:r><w:t>{_words(rng, 12)}</w:t></w:r></w:p>" for _ in range(rng.randint(40, 120))
    )
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
        'openxmlformats.org/package/2006/content-types"><Default Extension="xml" '
        'ContentType="application/xml"/></Types>',
        "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships/>',
        "docProps/core.xml": '<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties/>',
        "word/document.xml": '<?xml version="1.0" encoding="UTF-8"?><w:document><w:body>'
        + paras
        + "</w:body></w:document>",
        "word/styles.xml": '<?xml version="1.0" encoding="UTF-8"?><w:styles/>',
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(zipfile.ZipInfo(name, (2026, 12, 1, 0, 0, 0)), text, zipfile.ZIP_DEFLATED)
        z.writestr(
            zipfile.ZipInfo("word/media/image1.png", (2026, 12, 1, 0, 0, 0)),
            b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(2_000, 20_000)),
        )
    return out.getvalue()


def _mixed(rng: random.Random, i: int, kind: str, name: str, ctype: str, data: bytes) -> bytes:
    b = f"mix-{i:06d}-{rng.getrandbits(32):08x}"
    text = _paragraphs(rng, rng.randint(300, 900)) + f"\r\nThe file {name} is attached.\r\n"
    body = (
        f"This is a multi-part message in MIME format.\r\n\r\n--{b}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + f"\r\n--{b}\r\n"
        f'Content-Type: {ctype}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n' + _b64(data) + f"--{b}--\r\n"
    )
    return (_head(rng, i, kind, f'multipart/mixed; boundary="{b}"') + "\r\n" + body).encode()


def attach_message(rng: random.Random, i: int) -> bytes:
    which = i % 3
    if which == 0:
        return _mixed(
            rng,
            i,
            "attach",
            f"statement-{i}.pdf",
            "application/pdf",
            pdf_blob(rng, rng.randint(10_000, 60_000)),
        )
    if which == 1:
        return _mixed(rng, i, "attach", f"files-{i}.zip", "application/zip", zip_blob(rng))
    ctype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return _mixed(rng, i, "attach", f"minutes-{i}.docx", ctype, docx_blob(rng))


def large_message(rng: random.Random, i: int) -> bytes:
    size = rng.randint(760_000, 780_000)  # base64: ~1.0 MiB message
    if i % 2:
        return _mixed(rng, i, "large", f"scan-{i}.pdf", "application/pdf", pdf_blob(rng, size))
    return _mixed(rng, i, "large", f"photo-{i}.jpg", "image/jpeg", jpeg_blob(rng, size))


DATE = 1796212800.0  # Wed, 02 Dec 2026 12:00:00 +0000
_DATE = [DATE]
MAKERS = {"text": text_message, "html": html_message, "attach": attach_message, "large": large_message}


def sender(message: bytes) -> str:
    """The address of the From header (the envelope sender that goes with it)."""
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    return email.utils.parseaddr(next(x for x in head.split("\r\n") if x.startswith("From:"))[5:])[1]


def counts(n: int) -> dict[str, int]:
    """Messages of each kind among ``n`` (the shares rounded; text takes the remainder)."""
    out = {k: round(n * SHARES[k]) for k in KINDS if k != "text"}
    out["large"] = max(1, out["large"])
    return {"text": n - sum(out.values()), **out}


def build(n: int = 200, seed: int = 11, date: float = DATE) -> list[tuple[str, bytes]]:
    """``n`` (kind, message) pairs in a seeded shuffled order; the same arguments, the same bytes.
    ``date`` (Unix time) is the newest Date header; the others go back a minute per message
    (content_load.py passes the current time: rspamd scores dates far off now)."""
    _DATE[0] = date
    rng = random.Random(seed)
    kinds = [k for k, c in counts(n).items() for _ in range(c)]
    rng.shuffle(kinds)
    return [(kind, MAKERS[kind](rng, i)) for i, kind in enumerate(kinds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", help="write <i>-<kind>.eml files here")
    a = ap.parse_args()
    msgs = build(a.n, a.seed)
    for kind in KINDS:
        sizes = [len(m) for k, m in msgs if k == kind]
        if sizes:
            mean = sum(sizes) / len(sizes)
            print(f"{kind}: {len(sizes)} messages, {min(sizes):,}-{max(sizes):,} B, mean {mean:,.0f} B")
    print(f"all: {len(msgs)} messages, {sum(len(m) for _, m in msgs):,} B")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, (kind, m) in enumerate(msgs):
            (out / f"{i:04d}-{kind}.eml").write_bytes(m)


if __name__ == "__main__":
    main()
