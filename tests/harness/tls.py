"""Test certificates (trustme): a CA, a server certificate for spamgate and one for the sink."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


@dataclass
class Pki:
    ca: trustme.CA
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server context for a TLS-capable sink."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("sink.test", "127.0.0.1").configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def ca_file(self, directory: Path) -> Path:
        path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.spamgate.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return Pki(ca, cert_file, key_file)
