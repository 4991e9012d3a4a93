"""The DNS layer: :class:`Resolver` (async, cached, shared in-flight queries) built from ``[dns]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.dns.resolver import DnsResult, Resolver

if TYPE_CHECKING:
    from proxy.config.schema import Config

__all__ = ["DnsResult", "Resolver", "build_resolver"]


def build_resolver(config: Config) -> Resolver:
    """The process's resolver; it binds to the serving loop on first use (or ``bind``)."""
    return Resolver(config.dns)
