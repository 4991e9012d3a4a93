"""``[dns]``: the one resolver every check uses (DNS lists, rDNS, SPF, DKIM, DMARC)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: list[str] = opt(
        [],
        "Nameservers as 'ip', 'ip:port' or '[ipv6]:port'; empty: the system's (/etc/resolv.conf). "
        "All checks use them. Use a local recursive resolver: public resolvers are refused by DNS lists.",
    )
    timeout: float = opt("2s", "Timeout of one DNS query attempt.", kind="duration")
    retries: int = opt(1, "Retries of a DNS query after a timeout.", minimum=0)
    cache_size: int = opt(
        20000, "Answers kept in the resolver's LRU cache (0: no cache of our own).", minimum=0
    )
    min_ttl: float = opt("10s", "Answers are cached at least this long.", kind="duration")
    max_ttl: float = opt("1h", "Answers are cached at most this long.", kind="duration")
    negative_ttl: float = opt(
        "60s", "How long 'no such name' and 'no such record' answers are cached.", kind="duration"
    )
