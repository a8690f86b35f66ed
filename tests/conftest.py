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


# What require() skipped in this run (reason -> how to install it), for the summary line.
MISSING: dict[str, str] = {}


def require(condition: bool, reason: str, install: str = "") -> None:
    """Skip with ``reason`` when a dependency is missing; in CI a missing dependency fails.
    ``install`` tells a newcomer how to get it (printed once at the end of the run).

    A test that only makes sense after the skipped ones ran (a summary check) must depend on
    the same fixture, so that it is skipped with them instead of failing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing dependency in CI: {reason}")
    MISSING.setdefault(reason, install)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """One line per missing prerequisite, last before pytest's own count: a green local run
    says what it did not test and how to fix that."""
    # The outermost wrapper: after pytest's short summary (-ra), which a wrapper prints last.
    yield
    skipped = terminalreporter.stats.get("skipped", [])
    for reason, install in MISSING.items():
        count = sum(
            1
            for report in skipped
            if isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(reason)
        )
        how = f"; install it: {install}" if install else ""
        terminalreporter.write_line(
            f"missing prerequisite: {reason}; {count} test{'s' * (count != 1)} skipped{how}",
            yellow=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def next_deps() -> Path:
    """The bundled app's node_modules, as its lockfile says (`npm ci` when that changed)."""
    require(shutil.which("node") is not None, "node is not on PATH")
    require(shutil.which("make") is not None, "make is not on PATH")
    result = subprocess.run(["make", "-s", "app-deps"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"installing nextjs-app's dependencies failed:\n{result.stdout}\n{result.stderr}"
        )
    return NEXT_DIR


@pytest.fixture(scope="session")
def next_build(next_deps: Path) -> Path:
    """The bundled app, installed and built (once per session; `make build` knows when)."""
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
