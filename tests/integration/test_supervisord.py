"""The shipped supervisord.conf, run for real: supervisord starts the local Redis and the
gateway (which starts `next start`), `supervisorctl restart gateway` leaves no orphan node and
brings a new one up, `supervisorctl shutdown` ends every process with status 0."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import require
from support.procs import ROOT, free_port, http_request, pid_alive
from support.supervisord import Supervisord

BIN = Path(sys.executable).parent


@pytest.fixture
def supervisord_env(next_build: Path, tmp_path: Path) -> dict[str, str]:
    require(shutil.which("supervisord", path=str(BIN)) is not None, "supervisor not installed")
    require(shutil.which("redis-server") is not None, "redis-server is not on PATH")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "NEXT_TELEMETRY_DISABLED": "1",
        "GATEWAY_CONFIG": str(ROOT / "config" / "gateway.yaml"),
        "GATEWAY_RUN_DIR": str(run_dir),
        "GATEWAY_LOCAL_REDIS": "true",
        "GATEWAY_ENGINE": "redis",
        "GATEWAY_REDIS_URL": f"unix://{run_dir}/redis.sock",
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_NEXT_DIR": str(next_build),
        "WS_SECRET": "supervisord-test-secret-0123456789abcdef",
        "GATEWAY_API_KEY": "supervisord-test-api-key",
    }


def ready(port: str) -> dict[str, object] | None:
    try:
        status, _, body = http_request(f"http://127.0.0.1:{port}/_gateway/ready", timeout=3)
    except OSError:
        return None
    state: dict[str, object] = json.loads(body)
    return state if status == 200 else None


def test_supervisord_runs_restarts_and_shuts_down_the_stack(
    supervisord_env: dict[str, str],
) -> None:
    port = supervisord_env["GATEWAY_PORT"]
    conf = ROOT / "supervisord.conf"
    with Supervisord([str(BIN / "supervisord")], conf, supervisord_env, ROOT) as sv:
        sv.wait_running("redis", "gateway")
        state = sv.wait(lambda: ready(port), 60, "the gateway ready")
        assert state["broker"] == {  # the Redis program, through its unix socket
            "kind": "redis",
            "state": "up",
            "errors": 0,
            "shards": [{"url": supervisord_env["GATEWAY_REDIS_URL"], "state": "up", "channels": 0}],
        }
        gateway, redis = sv.pid_of("gateway"), sv.pid_of("redis")
        node = int(state["next"]["pid"])  # type: ignore[index]
        assert pid_alive(node)

        out = sv.ctl("restart", "gateway")
        assert "gateway: stopped" in out and "gateway: started" in out, out
        assert not pid_alive(gateway)
        assert not pid_alive(node), "the old Next.js child outlived its gateway"
        state = sv.wait(lambda: ready(port), 60, "the gateway ready again")
        new_gateway, new_node = sv.pid_of("gateway"), int(state["next"]["pid"])  # type: ignore[index]
        assert new_gateway != gateway and new_node != node
        assert sv.pid_of("redis") == redis  # untouched
        assert "stopped: gateway (exit status 0)" in sv.log

        # A deploy under supervisord: `supervisorctl signal HUP gateway` reloads the app (here
        # the same release) with a new child, without restarting the gateway.
        sv.ctl("signal", "HUP", "gateway")
        state = sv.wait(
            lambda: (
                (s := ready(port))
                and s["next"]["reload"]["generation"] == 1
                and not s["next"]["reload"]["reloading"]
                and s
            ),
            90,
            "the reload",
        )
        assert state["next"]["reload"]["last"]["state"] == "ok", state  # type: ignore[index]
        assert sv.pid_of("gateway") == new_gateway
        reloaded_node = int(state["next"]["pid"])  # type: ignore[index]
        assert reloaded_node != new_node
        sv.wait(lambda: not pid_alive(new_node), 30, "the previous child to stop")
        new_node = reloaded_node

        out = sv.ctl("shutdown")
        assert "Shut down" in out, out
        assert sv.proc is not None
        assert sv.proc.wait(60) == 0, sv.log
        for pid in (new_gateway, new_node, redis):
            assert not pid_alive(pid), f"pid {pid} still running after shutdown\n{sv.log}"
        exits = re.findall(r"stopped: (\w+) \(exit status (\d+)\)", sv.log)
        assert ("gateway", "0") in exits and ("redis", "0") in exits, exits
        # Stopped in order: the gateway (which drained and stopped Next.js), then Redis.
        assert exits[-2:] == [("gateway", "0"), ("redis", "0")], exits
        assert "Traceback" not in sv.log
        assert not list(Path(supervisord_env["GATEWAY_RUN_DIR"]).glob("*.sock"))
