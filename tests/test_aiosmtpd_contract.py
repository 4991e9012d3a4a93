"""What proxy/session/protocol.py and proxy/relay/smtp.py rely on in aiosmtpd and aiosmtplib internals.

Both override or drive private parts of these libraries; this test fails first when an upgrade
changes them, instead of a subtle relay bug.
"""

from __future__ import annotations

import inspect

import aiosmtpd
import aiosmtplib
from aiosmtpd.proxy_protocol import V2_CMD, get_proxy
from aiosmtpd.smtp import SMTP
from aiosmtplib.protocol import SMTPProtocol


def test_aiosmtpd_pinned_and_hooks_present() -> None:
    assert aiosmtpd.__version__ == "1.4.6"
    for name in (
        "_handle_client",
        "_cb_client_connected",
        "_reset_timeout",
        "_timeout_cb",
        "connection_made",
    ):
        assert hasattr(SMTP, name), name
    assert inspect.iscoroutinefunction(get_proxy)
    assert V2_CMD.LOCAL is not None


def test_aiosmtpd_clears_plaintext_buffer_after_tls() -> None:
    """CVE-2024-34083: connection_made of the TLS transport empties the reader buffer."""
    src = inspect.getsource(SMTP.connection_made)
    assert "_buffer.clear()" in src


def test_aiosmtplib_protocol_internals() -> None:
    major = int(aiosmtplib.__version__.split(".")[0])
    assert major == 5
    proto_src = inspect.getsource(SMTPProtocol)
    for attr in ("_command_lock", "_response_pending"):
        assert attr in proto_src, attr
    assert inspect.iscoroutinefunction(SMTPProtocol.read_response)
    assert callable(SMTPProtocol.write)
    # The steps _transfer copies from execute_data_command.
    data_src = inspect.getsource(SMTPProtocol.execute_data_command)
    assert "_command_lock" in data_src
    assert "read_response" in data_src
