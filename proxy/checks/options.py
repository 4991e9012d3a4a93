"""The options every check shares: ``[checks.<name>] enabled, mode``.

A check's own ``Options`` dataclass subclasses :class:`BaseOptions` and adds its keys with
:func:`proxy.config.fields.opt`, so each key is documented with its default.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class BaseOptions:
    enabled: bool = opt(True, "Run this check.")
    mode: str = opt(
        "enforce",
        "'enforce': its symbols count toward the action; 'observe': logged with the would-be action only.",
        choices=("enforce", "observe"),
    )


@dataclass(frozen=True, slots=True)
class OffByDefault(BaseOptions):
    enabled: bool = opt(False, "Run this check.")
