"""A LocalControlPlane behind a real ApiServer on 127.0.0.1 (a free port), per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coreplane.api.server import ApiServer
from tests.api.local import TOKENS, LocalControlPlane


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LocalControlPlane, ApiServer]]:
    cp = LocalControlPlane()
    server = ApiServer(
        cp, "127.0.0.1:0", tokens=TOKENS, body_bytes_max=64 * 1024, watch_wait_ms_max=300
    )
    server.start()
    try:
        yield cp, server
    finally:
        server.stop()
