"""STARTTLS on a live client connection (RFC 3207), on aiosmtpd's transport plumbing.

The handshake swaps the protocol under the transport: aiosmtpd's ``connection_made`` then
clears whatever plaintext arrived before it (CVE-2024-34083), and the session forgets the
client's HELO and transaction (RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any

HANDSHAKE_TIMEOUT = 30.0


async def start_tls(proto: Any, ctx: ssl.SSLContext) -> str:
    """Upgrade ``proto`` (the session's aiosmtpd protocol) in place; returns the protocol
    version and cipher, or "" when the handshake failed (the caller closes)."""
    loop = proto.loop
    waiter = loop.create_future()
    tls_protocol = sslproto.SSLProtocol(loop, proto, ctx, waiter, server_side=True)
    proto._tls_protocol = tls_protocol
    proto._original_transport = proto.transport
    proto._original_transport.set_protocol(tls_protocol)
    proto.transport = tls_protocol._app_transport
    tls_protocol.connection_made(proto._original_transport)
    try:
        await asyncio.wait_for(waiter, HANDSHAKE_TIMEOUT)
    except Exception:
        if proto._original_transport is not None:
            proto._original_transport.close()
        return ""
    ssl_obj = proto.transport.get_extra_info("ssl_object")
    return f"{ssl_obj.version()} {ssl_obj.cipher()[0]}" if ssl_obj else "TLS"
