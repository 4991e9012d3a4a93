"""Shared fixtures: a recording downstream sink and spamgate processes, all on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.clamd import clamd_server  # noqa: F401
from tests.harness.core_fixtures import _close_raw_clients  # noqa: F401
from tests.harness.dns_server import dns_server  # noqa: F401
from tests.harness.proc import Spamgate
from tests.harness.redis_server import redis_server  # noqa: F401
from tests.harness.rspamd import rspamd_server  # noqa: F401
from tests.harness.sink import Sink
from tests.harness.spamd import spamd_server  # noqa: F401
from tests.harness.tls import pki  # noqa: F401


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.close()


@pytest.fixture
def spamgate_factory(tmp_path: Path) -> Iterator[Callable[..., Spamgate]]:
    """Start spamgate processes with config overrides; all are stopped at teardown."""
    started: list[Spamgate] = []

    def make(
        config: dict[str, Any] | None = None,
        *,
        start: bool = True,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> Spamgate:
        sg = Spamgate(tmp_path / f"sg{len(started)}", config, host=host)
        started.append(sg)
        return sg.start(env=env) if start else sg

    yield make
    for sg in started:
        sg.terminate()  # all drain at once
    for sg in started:
        sg.stop()


@pytest.fixture
def relay(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> Spamgate:
    """spamgate relaying to the sink with default settings."""
    return spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
