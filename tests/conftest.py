"""Shared fixtures: dependency policy (skip locally, fail in CI), the Next.js build, and one
gateway in front of a real `next start` for the tests that do not disturb it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import ROOT, GatewayProcess

IN_CI = os.environ.get("CI", "").lower() == "true"
NEXT_DIR = ROOT / "nextjs-app"


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when a dependency is missing; in CI a missing dependency fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing dependency in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def next_build() -> Path:
    """The bundled app, installed and built (once per session; `make build` knows when)."""
    require(shutil.which("node") is not None, "node is not on PATH")
    require(shutil.which("make") is not None, "make is not on PATH")
    result = subprocess.run(["make", "-s", "build"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"building nextjs-app failed:\n{result.stdout}\n{result.stderr}")
    assert (NEXT_DIR / ".next" / "BUILD_ID").is_file()
    return NEXT_DIR


@pytest.fixture(scope="session")
def next_gateway(
    next_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway in front of a real `next start`, shared by every directory's tests (one
    instance per session: defined here, not in a directory's conftest)."""
    with GatewayProcess(
        tmp_path_factory.mktemp("next-gw"), {"next": {"dir": str(next_build)}}
    ) as gw:
        gw.wait_ready(60)
        yield gw
