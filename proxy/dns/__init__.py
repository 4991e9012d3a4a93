"""The DNS layer: :class:`Resolver` (async, cached, shared in-flight queries) built from ``[dns]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.dns.resolver import DnsResult, Resolver

if TYPE_CHECKING:
    from proxy.config.schema import Config

__all__ = ["DnsResult", "Resolver", "build_resolver"]


_shared: Resolver | None = None


def build_resolver(config: Config) -> Resolver:
    """The process's resolver. A reload with an unchanged ``[dns]`` section gets the same one
    (its cache stays warm; each generation binds it at start and closes it at stop, and it
    really closes with its last user); a changed section gets a new one."""
    global _shared
    if _shared is None or _shared.config != config.dns:
        _shared = Resolver(config.dns)
    return _shared
