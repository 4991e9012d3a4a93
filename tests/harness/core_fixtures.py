"""Fixtures of the core relay tests: raw clients are always closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.clients import Raw


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    Raw.close_all()
