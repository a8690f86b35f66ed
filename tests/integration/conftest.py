"""A gateway in front of a real `next start`, shared by the tests that do not disturb it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import GatewayProcess


@pytest.fixture(scope="session")
def next_gateway(
    next_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        tmp_path_factory.mktemp("next-gw"), {"next": {"dir": str(next_build)}}
    ) as gw:
        gw.wait_ready(60)
        yield gw


def direct_url(gw: GatewayProcess, path: str) -> str:
    """The same path on the Next.js child itself, bypassing the gateway."""
    state = gw.ready_state()
    assert state is not None
    return f"http://127.0.0.1:{state['next']['port']}{path}"
