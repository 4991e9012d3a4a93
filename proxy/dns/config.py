"""``[dns]``: the one resolver every check uses (DNS lists, rDNS, SPF, DKIM, DMARC)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: list[str] = opt(
        [],
        "Nameservers as 'ip' or 'ip:port'; empty: the system's (/etc/resolv.conf). All checks use them.",
    )
    timeout: float = opt("2s", "Timeout of one DNS query attempt.", kind="duration")
    retries: int = opt(1, "Retries of a DNS query after a timeout.", minimum=0)
