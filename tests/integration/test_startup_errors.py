"""Start-up mistakes: one line that says what to do, a non-zero exit, nothing left running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.procs import ROOT, free_port, standin_command


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("gateway: ")]
    assert len(errors) == 1, output
    assert text in errors[0], output
    assert "starting: pid" not in output  # no child was spawned


def fake_next_install(root: Path) -> Path:
    script = root / "node_modules" / "next" / "dist" / "bin" / "next"
    script.parent.mkdir(parents=True)
    script.write_text("// not really next\n")
    package = {"name": "next", "version": "16.4.6", "engines": {"node": ">=20.9.0"}}
    (root / "node_modules" / "next" / "package.json").write_text(json.dumps(package))
    return root


def test_missing_next_dir(tmp_path: Path) -> None:
    result = gateway("--next-dir", str(tmp_path / "nope"), "--port", str(free_port()))
    assert_one_line_error(result, 1, f"Next.js directory '{tmp_path / 'nope'}' does not exist")


def test_no_node_on_path(tmp_path: Path) -> None:
    result = gateway("--next-dir", str(tmp_path), env={"PATH": str(tmp_path)})
    assert_one_line_error(result, 1, "'node' not found on PATH: install Node.js")
    app = fake_next_install(tmp_path)  # then the floor is the installed Next.js's
    result = gateway("--next-dir", str(app), env={"PATH": str(tmp_path)})
    assert_one_line_error(
        result, 1, "'node' not found on PATH: install Node.js >=20.9.0 (what Next.js 16.4.6 needs)"
    )


def test_next_not_installed(tmp_path: Path) -> None:
    result = gateway("--next-dir", str(tmp_path))
    assert_one_line_error(result, 1, f"Next.js is not installed in '{tmp_path}': run `npm ci`")


def test_no_production_build(tmp_path: Path) -> None:
    app = fake_next_install(tmp_path)
    result = gateway("--next-dir", str(app))
    assert_one_line_error(result, 1, f"no production build in '{app}/.next': run `make build`")


def test_dev_mode_needs_no_build(tmp_path: Path) -> None:
    # Preflight passes in dev mode; the fake `next` then fails to start, which is another story.
    app = fake_next_install(tmp_path)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"next": {"restart": {"max_failures": 1}, "start_timeout": 2}}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(cfg),
            "--next-dir",
            str(app),
            "--dev",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            out += line
            if "giving up" in line:
                break
        assert "no production build" not in out
        assert "next dev from" in out
        assert "next starting: pid" in out
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_port_already_in_use(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"next": {"dir": ".", "command": standin_command()}}))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = gateway("--config", str(cfg), "--port", str(port))
    assert_one_line_error(result, 1, f"port {port} on 0.0.0.0 is already in use")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("server: [\n", "invalid YAML"),
        (
            "next:\n  restart:\n    max_failures: 0\n",
            "g.yaml:3: next.restart.max_failures: 0 is out of range",
        ),
    ],
)
def test_invalid_config_exits_2(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(content)
    assert_one_line_error(gateway("--config", str(cfg)), 2, message)


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(gateway("--config", str(tmp_path)), 2, "cannot read config file")
    assert_one_line_error(gateway("--config", str(tmp_path / "x.yaml")), 2, "config file not found")
