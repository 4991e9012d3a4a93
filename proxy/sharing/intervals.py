"""A set of IPv4/IPv6 networks as sorted, merged intervals: a lookup is one bisect.

Built once per feed update (``O(n log n)``), never changed afterwards: a refresh builds a new
set and swaps it in. Each merged interval keeps the label (the CIDR as written) of its first
network, for the symbol's evidence.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IntervalSet:
    def __init__(self, networks: Iterable[tuple[int, int, int, str]]) -> None:
        """``networks``: (version, first, last, label) with first <= last as integers."""
        self.starts: dict[int, list[int]] = {4: [], 6: []}
        self.ends: dict[int, list[int]] = {4: [], 6: []}
        self.labels: dict[int, list[str]] = {4: [], 6: []}
        for version, first, last, label in sorted(networks):
            starts, ends = self.starts[version], self.ends[version]
            if ends and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
                continue
            starts.append(first)
            ends.append(last)
            self.labels[version].append(label)

    def __len__(self) -> int:
        return len(self.starts[4]) + len(self.starts[6])

    def lookup(self, ip: Address) -> str | None:
        """The label of the interval holding ``ip``, else None."""
        v, n = ip.version, int(ip)
        i = bisect.bisect_right(self.starts[v], n) - 1
        if i >= 0 and n <= self.ends[v][i]:
            return self.labels[v][i]
        return None

    @classmethod
    def of(cls, networks: Iterable[Network]) -> IntervalSet:
        return cls((n.version, int(n.network_address), int(n.broadcast_address), str(n)) for n in networks)
