"""Mail-authentication test helpers: a resolver on a background loop, DKIM/ARC keys and signing.

- :class:`LoopResolver`: spamgate's own :class:`~proxy.dns.resolver.Resolver` bound to an event
  loop in a thread, so synchronous code under test (pyspf, dkimpy) can call
  ``lookup_blocking`` exactly as it does inside spamgate's thread pool.
- :class:`DkimKey`: an RSA or Ed25519 key generated in the test, its DNS record published in
  the test DNS server, and ``sign(message)`` / ``arc_seal(message)`` with dkimpy.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nacl.signing import SigningKey

from proxy.dns.config import DnsConfig
from proxy.dns.resolver import DnsResult, Resolver
from tests.harness.dns_server import DnsTestServer

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


class LoopResolver:
    """A fresh Resolver (empty caches) on its own loop thread, pointed at ``address``."""

    def __init__(self, address: str, timeout: float = 0.2) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.resolver = Resolver(DnsConfig(nameservers=[address], timeout=timeout, retries=0))

        async def bind() -> None:
            self.resolver.bind(asyncio.get_running_loop())

        asyncio.run_coroutine_threadsafe(bind(), self.loop).result(5)

    def lookup(self, name: str, rdtype: str) -> DnsResult:
        return self.resolver.lookup_blocking(name, rdtype)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.resolver.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self) -> LoopResolver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _chunks(text: str, size: int = 250) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class DkimKey:
    """A signing key for ``selector._domainkey.domain``; ``algo`` is "rsa" or "ed25519"."""

    def __init__(self, domain: str, selector: str = "sel", algo: str = "rsa", bits: int = 1024) -> None:
        self.domain, self.selector, self.algo = domain, selector, algo
        if algo == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            self.private = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.record = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
            self.sig_algo = b"rsa-sha256"
        else:
            sk = SigningKey.generate()
            self.private = base64.b64encode(bytes(sk))
            self.record = f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(sk.verify_key)).decode()}"
            self.sig_algo = b"ed25519-sha256"

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def publish(self, dns: DnsTestServer, record: str | None = None) -> DkimKey:
        dns.add(self.name, "TXT", _chunks(record if record is not None else self.record))
        return self

    def sign(self, message: bytes, identity: str = "") -> bytes:
        """The message with a DKIM-Signature prepended."""
        sig = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private,
            identity=identity.encode() if identity else None,
            include_headers=SIGNED_HEADERS,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=self.sig_algo,
        )
        return bytes(sig) + message

    def arc_seal(self, message: bytes, srv_id: str, auth_results: str = "") -> bytes:
        """Add one ARC set (as a forwarder that sealed it); ``auth_results`` goes in ARC-A-R."""
        if not auth_results:
            auth_results = f"{srv_id}; spf=pass smtp.mailfrom={self.domain}"
        message = f"Authentication-Results: {auth_results}\r\n".encode() + message
        headers = dkim.arc_sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private,
            srv_id.encode(),
            include_headers=SIGNED_HEADERS,
        )
        return b"".join(headers) + message


def auth_zone(dns: DnsTestServer) -> None:
    """The base zone of the authentication tests (client 127.0.0.9 = mail.sender.test).

    sender.test: MX, SPF for 127.0.0.0/24, DMARC p=reject; other.test: SPF pass for the
    client but unaligned with sender.test; bounce.sender.test: SPF pass (relaxed-aligned)."""
    dns.add("sender.test", "MX", "10 mail.sender.test.")
    dns.add("mail.sender.test", "A", "127.0.0.9")
    dns.add("9.0.0.127.in-addr.arpa", "PTR", "mail.sender.test")
    dns.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.0/24 -all")
    dns.add("mail.sender.test", "TXT", "v=spf1 ip4:127.0.0.0/24 -all")
    dns.add("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@sender.test")
    for name in ("other.test", "bounce.sender.test"):
        dns.add(name, "MX", "10 mail.sender.test.")
        dns.add(name, "TXT", "v=spf1 ip4:127.0.0.0/24 -all")


def send_raw(
    port: int,
    data: bytes,
    mail_from: str = "alice@sender.test",
    source_ip: str = "127.0.0.9",
    helo: str = "mail.sender.test",
) -> dict[str, Any]:
    """Send ``data`` as is; ``{"ok": True}`` or ``{"error": code, "reply": text}``."""
    import smtplib

    from tests.harness.clients import smtp

    try:
        with smtp(port, source_ip) as c:
            c.ehlo(helo)
            c.sendmail(mail_from, ["bob@example.test"], data)
            return {"ok": True}
    except smtplib.SMTPResponseException as exc:
        return {"error": exc.smtp_code, "reply": exc.smtp_error.decode()}


def send_within(port: int, data: bytes, limit: float, **kw: Any) -> dict[str, Any]:
    """:func:`send_raw`, asserting the whole transaction took less than ``limit`` seconds (a DNS
    timeout must cost the stage budget, not more)."""
    import time

    t0 = time.monotonic()
    result = send_raw(port, data, **kw)
    assert time.monotonic() - t0 < limit, f"took {time.monotonic() - t0:.2f}s"
    return result


def assert_outcome(result: dict[str, Any], code: int | None) -> None:
    """Delivered when ``code`` is None, else refused with that code."""
    if code is None:
        assert result.get("ok"), result
    else:
        assert result.get("error") == code, result
