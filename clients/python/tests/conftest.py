"""The client's own tests: no server, no linevault import; httpx's MockTransport only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina


@pytest.fixture(autouse=True)
def _retries_without_waiting() -> Iterator[None]:
    """stamina's test mode: the client's own attempt count, no sleeping between them."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield
