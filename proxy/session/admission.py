"""Who is this client: the TCP peer, or the address a trusted load balancer gives in a PROXY
header (v1 or v2, aiosmtpd's parser; only from ``proxy_protocol.trusted_networks``)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import structlog
from aiosmtpd.proxy_protocol import V2_CMD, get_proxy

from proxy.model import Connection, IPAddress, new_connection_id
from proxy.session.runtime import Generation

log = structlog.get_logger("spamgate")


def client_ip(text: str) -> IPAddress:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def behind_proxy(transport: Any, gen: Generation) -> bool:
    peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
    return bool(gen.trusted_proxies) and any(client_ip(peer[0]) in n for n in gen.trusted_proxies)


async def identify(transport: Any, reader: asyncio.StreamReader, gen: Generation) -> Connection | None:
    """The connection's client; None when a trusted peer sent no valid PROXY header."""
    peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
    sock = transport.get_extra_info("sockname") or ("", 0)
    peer_ip = client_ip(peer[0])
    ip, port = peer_ip, int(peer[1])
    if behind_proxy(transport, gen):
        data = await get_proxy(reader)
        if not data.valid:
            log.warning("proxy_protocol_invalid", peer=str(peer_ip), error=data.error)
            return None
        if data.command != V2_CMD.LOCAL and data.src_addr is not None:
            ip, port = client_ip(str(data.src_addr)), int(data.src_port or 0)
    return Connection(new_connection_id(), ip, port, (str(peer[0]), int(peer[1])), int(sock[1]))
