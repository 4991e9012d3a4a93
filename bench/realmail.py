"""W5-real: the DNS zone and the signed mail of the benchmark with every check on.

- 1,000 sender domains ``sender0000.test`` .. ``sender0999.test`` (each its own organisational
  domain): MX, SPF (``ip4:`` of the client that sends for it; every fourth domain through
  ``include:_spf.esp.test`` instead), DMARC (p=reject, quarantine or none in turn), DKIM keys;
- 200 clients (``loadgen.sources(200)``, each alone in its /24) with forward-confirmed PTR
  names ``mta<j>.client<j>.test`` (also their HELO name);
- the DNSBL ``bl.bench.test`` and RHSBL ``dbl.bench.test`` list nothing (cached NXDOMAINs) but
  answer their health probes;
- one message per domain, From the domain, DKIM-signed: even domains RSA-2048 (selector
  ``r``), odd ones Ed25519 (``e``), every third domain by both; every fifth message carries one
  ARC set sealed by the forwarder ``fwd.test`` (RSA-2048). The signing keys are shared by
  several domains (the public key is published under each domain's own name, so each domain
  costs its own DNS lookups and verification; only key generation is saved).

Answers have realistic TTLs (SPF/DMARC/DKIM 1 h, MX/A/PTR 5 min) so that spamgate's resolver
cache sees what it would: a domain seen again within the TTL is a hit, a new one a miss.
``build(dns, pool_file)`` publishes the zone in a running ``DnsTestServer`` and writes the
message pool loadgen.py sends (``--pool``: (source, helo, mail_from, rcpt, message) per entry).
"""

from __future__ import annotations

import base64
import pickle
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from loadgen import sources
from nacl.signing import SigningKey

DOMAINS = 1000
CLIENTS = 200
KEYS = 4  # signing keys of each algorithm, shared round-robin by the domains
LONG_TTL, SHORT_TTL = 3600, 300
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]
RCPT = "bar@bench.test"


def _rsa() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


def _ed25519() -> tuple[bytes, str]:
    sk = SigningKey.generate()
    return base64.b64encode(
        bytes(sk)
    ), f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(sk.verify_key)).decode()}"


def _txt(dns: Any, name: str, text: str, ttl: int = LONG_TTL) -> None:
    dns.add(name, "TXT", [text[i : i + 250] for i in range(0, len(text), 250)], ttl)


def client_name(j: int) -> str:
    return f"mta{j}.client{j}.test"


def publish_clients(dns: Any) -> list[str]:
    """The 200 clients' PTR and A records; their addresses."""
    ips = sources(CLIENTS)
    for j, ip in enumerate(ips):
        dns.add(".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR", client_name(j) + ".", SHORT_TTL)
        dns.add(client_name(j), "A", ip, SHORT_TTL)
    dns.add("2.0.0.127.bl.bench.test", "A", "127.0.0.2")  # list health probes
    dns.add("test.dbl.bench.test", "A", "127.0.0.2")
    _txt(dns, "_spf.esp.test", "v=spf1 ip4:127.0.0.0/8 -all")
    return ips


def _message(domain: str, i: int) -> bytes:
    return (
        f"From: Sender {i} <news@{domain}>\r\nTo: <{RCPT}>\r\nSubject: W5-real message {i}\r\n"
        f"Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{i}.bench@{domain}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n" * 48)


def build(dns: Any, pool_file: Path) -> dict[str, int]:
    """Publish the zone in ``dns`` and write the message pool; counts of what was built."""
    ips = publish_clients(dns)
    rsa_keys = [_rsa() for _ in range(KEYS)]
    ed_keys = [_ed25519() for _ in range(KEYS)]
    fwd_key, fwd_record = _rsa()
    _txt(dns, "f._domainkey.fwd.test", fwd_record)
    pool: list[tuple[str, str, str, str, bytes]] = []
    stats = {"rsa": 0, "ed25519": 0, "arc": 0}
    for i in range(DOMAINS):
        domain, j = f"sender{i:04d}.test", i % CLIENTS
        dns.add(domain, "MX", f"10 {client_name(j)}.", SHORT_TTL)
        spf = "include:_spf.esp.test" if i % 4 == 0 else f"ip4:{ips[j]}"
        _txt(dns, domain, f"v=spf1 {spf} -all")
        _txt(
            dns,
            f"_dmarc.{domain}",
            f"v=DMARC1; p={('reject', 'quarantine', 'none')[i % 3]}; rua=mailto:d@{domain}",
        )
        msg = _message(domain, i)
        signers = []
        if i % 2 == 0 or i % 3 == 0:
            signers.append((b"r", rsa_keys[i % KEYS], b"rsa-sha256"))
        if i % 2 == 1 or i % 3 == 0:
            signers.append((b"e", ed_keys[i % KEYS], b"ed25519-sha256"))
        for sel, (priv, record), algo in signers:
            _txt(dns, f"{sel.decode()}._domainkey.{domain}", record)
            sig = dkim.sign(
                msg, sel, domain.encode(), priv, include_headers=SIGNED,
                canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algo,
            )  # fmt: skip
            msg = bytes(sig) + msg
            stats["rsa" if algo == b"rsa-sha256" else "ed25519"] += 1
        if i % 5 == 0:
            ar = f"Authentication-Results: fwd.test; dkim=pass header.d={domain}; "
            ar += f"spf=pass smtp.mailfrom={domain}\r\n"
            msg = ar.encode() + msg
            msg = (
                b"".join(dkim.arc_sign(msg, b"f", b"fwd.test", fwd_key, b"fwd.test", include_headers=SIGNED))
                + msg
            )
            stats["arc"] += 1
        pool.append((ips[j], client_name(j), f"news@{domain}", RCPT, msg))
    pool_file.write_bytes(pickle.dumps(pool))
    return {"domains": DOMAINS, "clients": CLIENTS, **stats}
