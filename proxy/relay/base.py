"""The downstream side of a session: what the session asks of whatever delivers the mail.

A ``Downstream`` speaks for one client session. Every method returns the :class:`Reply` the
client must get; a failure of the downstream itself (refused, timed out, dropped) is a 4xx
reply, never an exception and never a 250: that is how nothing is ever lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from proxy.replies import Reply


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What XCLIENT passes on about the real client."""

    addr: str
    port: int = field(compare=False)  # not sent: XCLIENT is re-sent only when the rest changes
    name: str  # verified reverse name, "" when unknown
    helo: str
    proto: str  # "SMTP" or "ESMTP"


class Downstream(Protocol):
    async def open(self) -> Reply | None:
        """Connect if not connected; None when ready, else the 4xx for the client."""
        ...

    async def mail(self, sender: str, params: dict[str, str | None], identity: ClientIdentity) -> Reply: ...

    async def rcpt(self, rcpt: str, params: dict[str, str | None]) -> Reply: ...

    async def data(self, message: bytes) -> Reply: ...

    async def rset(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def capabilities(self) -> frozenset[str]: ...
