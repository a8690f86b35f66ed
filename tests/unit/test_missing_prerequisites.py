"""A machine without a test prerequisite (here Chromium) runs green with one line saying what
was skipped and how to install it; in CI the same run fails. Each case is a real pytest run of
tests/e2e in a subprocess, pointed at a Chromium that does not exist: the browser check comes
first, so nothing is built and no browser or gateway is started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.procs import ROOT


def run_browser_tests(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["GATEWAY_TEST_CHROMIUM"] = str(tmp_path / "no-chromium")
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/e2e",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_browser_skips_with_one_line_on_how_to_install_it(tmp_path: Path) -> None:
    run = run_browser_tests(tmp_path, ci=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert " failed" not in out and " error" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("missing prerequisite:")]
    assert len(lines) == 1, out
    assert str(tmp_path / "no-chromium") in lines[0], lines
    assert "apt-get install chromium" in lines[0], lines
    assert "tests skipped" in lines[0], lines
    # The line comes at the end of the run, just before pytest's own count.
    tail = out.strip().splitlines()
    assert tail[-2] == lines[0] and "skipped" in tail[-1], tail[-3:]


def test_in_ci_a_missing_browser_fails_the_run(tmp_path: Path) -> None:
    run = run_browser_tests(tmp_path, ci=True)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "missing dependency in CI" in out, out
    assert not any(line.startswith("missing prerequisite:") for line in out.splitlines()), out
