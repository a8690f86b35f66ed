"""The Dockerfile's recipe, followed outside Docker (no engine on this machine): its stages
build in a temporary directory with docker/build.sh, exactly as the Dockerfile says, and the
result is started with the image's CMD and environment. The HEALTHCHECK must pass, pages and
assets must be served, and a `docker stop` (SIGTERM to supervisord) must end it cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from support.dockerfile import Recipe, Stage
from support.procs import ROOT, free_port, http_request, pid_alive
from support.supervisord import Supervisord

# RUN lines that only make sense inside an image; every other RUN line is executed here.
IMAGE_ONLY = ("apt-get update", "useradd ")


def build_env() -> dict[str, str]:
    """The host environment (registries, certificates) without this test run's own settings
    and without the test virtualenv on PATH: the recipe must make its own."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "VIRTUAL_ENV", "PYTHON")) and k != "WS_SECRET"
    }
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return env


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipe]:
    node = shutil.which("node")
    require(node is not None, "node is not on PATH")
    require(shutil.which("npm") is not None, "npm is not on PATH")
    require(shutil.which("redis-server") is not None, "redis-server is not on PATH")
    assert node is not None
    # Short paths: the stage directory prefixes unix socket paths (limit 107 bytes).
    workspace = Path(tmp_path_factory.mktemp("img"))
    recipe = Recipe(
        ROOT / "Dockerfile",
        ROOT,
        workspace,
        base_files={"/usr/local/bin/node": Path(node)},  # what node:20-bookworm-slim provides
        image_only=lambda run: run.startswith(IMAGE_ONLY),
        host_env=build_env(),
    )
    recipe.build()
    yield recipe


def test_the_image_is_multi_stage_unprivileged_and_self_checking(recipe: Recipe) -> None:
    app, runtime = recipe.stages
    assert app.base.startswith("node:20") and runtime.base.startswith("python:3.11")
    assert [run.split()[0:2] for run in runtime.skipped] == [
        ["apt-get", "update"],
        ["useradd", "--system"],
    ]
    assert not app.skipped
    assert runtime.user not in ("root", "0", "")
    assert runtime.exposed == ["8000"]
    assert runtime.healthcheck and "/_gateway/ready" in runtime.healthcheck[-1]
    assert [Path(runtime.cmd[0]).name, *runtime.cmd[1:3]] == ["supervisord", "-n", "-c"]
    # The standalone build, without what only building needs, and the files the gateway
    # serves beside it (docs/compatibility.md: 42 MB instead of 363 MB for the pruned project).
    app_dir = runtime.path("/app/nextjs-app")
    built = app_dir / ".next" / "standalone"
    assert runtime.env["GATEWAY_NEXT_DIR"] == str(built)
    assert (built / "server.js").is_file() and (built / ".next" / "BUILD_ID").is_file()
    assert (built / "node_modules" / "next").is_dir()
    assert not (built / "node_modules" / "typescript").exists()  # a dev dependency
    assert not (app_dir / "node_modules").exists() and not (app_dir / ".next" / "cache").exists()
    assert any((app_dir / ".next" / "static").rglob("*.js")) and (app_dir / "public").is_dir()
    size = sum(p.stat().st_size for p in app_dir.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 80 * 2**20, f"the runtime app is {size / 2**20:.0f} MiB"
    # The gateway is installed, not linked to this checkout.
    site = list(runtime.path("/opt/gateway/lib").glob("python3*/site-packages/gateway/app.py"))
    assert site, "gateway not installed in the image's virtualenv"
    assert "image contents check out" in "\n".join(recipe.log)


def run_env(stage: Stage, port: int) -> dict[str, str]:
    """The image's environment plus what `docker run -e ...` adds."""
    return {
        **stage.env,
        "GATEWAY_PORT": str(port),
        "WS_SECRET": "docker-recipe-test-secret-0123456789",
        "GATEWAY_API_KEY": "docker-recipe-test-api-key",
    }


def healthy(stage: Stage, env: dict[str, str]) -> bool:
    result = subprocess.run(
        stage.healthcheck, cwd=stage.cwd(), env=env, capture_output=True, timeout=10
    )
    return result.returncode == 0


def test_the_image_command_serves_and_stops_cleanly(recipe: Recipe) -> None:
    stage = recipe.final
    port = free_port()
    env = run_env(stage, port)
    Path(env["GATEWAY_RUN_DIR"]).mkdir(parents=True, exist_ok=True)  # the image-only RUN's part
    assert not healthy(stage, env)  # nothing listening yet: the check can fail
    command = [shutil.which(stage.cmd[0], path=env["PATH"]) or stage.cmd[0], *stage.cmd[1:]]
    assert command[0].startswith(str(stage.root)), command  # the image's supervisord
    with Supervisord(command[:-3], Path(command[-1]), env, stage.cwd()) as sv:
        sv.wait(lambda: healthy(stage, env), 90, "the HEALTHCHECK to pass")
        status, _, body = http_request(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"<html" in body
        status, _, body = http_request(f"http://127.0.0.1:{port}/_gateway/ready")
        state = json.loads(body)
        build_id = (Path(env["GATEWAY_NEXT_DIR"]) / ".next" / "BUILD_ID").read_text().strip()
        assert state["static"]["build_id"] == build_id  # assets come from the image's build
        assert state["static"]["authoritative"]  # standalone: the gateway serves them
        status, _, body = http_request(f"http://127.0.0.1:{port}/about")
        chunk = re.search(rb'/_next/static/[^"]+\.js', body)
        assert status == 200 and chunk is not None
        assert http_request(f"http://127.0.0.1:{port}{chunk[0].decode()}")[0] == 200
        assert http_request(f"http://127.0.0.1:{port}/robots.txt")[0] == 200
        node_pid = state["next"]["pid"]
        assert pid_alive(node_pid)

        assert sv.proc is not None
        sv.proc.send_signal(signal.SIGTERM)  # what `docker stop` does to PID 1
        assert sv.proc.wait(60) == 0, sv.log
        assert "stopped: gateway (exit status 0)" in sv.log
        assert not pid_alive(node_pid)
        assert "Traceback" not in sv.log
