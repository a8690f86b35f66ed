"""Zero-downtime reloads of the Next.js app (SIGHUP / `gateway reload`), with stand-in releases:
each release is a directory (`next.dir` is a symlink to the current one) whose stand-in child
answers /version with the release's VERSION file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from support.procs import ROOT, GatewayProcess, pid_alive, standin_command, wait_until
from support.realtime import SECRET, token

API_KEY = "reload-api-key"


def release(root: Path, name: str, **files: str) -> Path:
    """A release directory: VERSION, a build id and a static chunk of its own, plus ``files``
    (BROKEN, START_DELAY, CRASH_AFTER: see standin_child.py)."""
    path = root / "releases" / name
    (path / ".next" / "static" / "chunks").mkdir(parents=True)
    (path / "VERSION").write_text(name)
    (path / ".next" / "BUILD_ID").write_text(f"build-{name}")
    (path / ".next" / "static" / "chunks" / f"{name}.js").write_text(f"console.log('{name}')")
    for filename, content in files.items():
        (path / filename).write_text(content)
    return path


def point(root: Path, target: Path) -> None:
    """Switch the `current` symlink atomically (what a deploy script does)."""
    tmp = root / "current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, root / "current")


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    point(tmp_path, release(tmp_path, "a"))
    config = {
        "next": {
            "dir": str(tmp_path / "current"),
            "command": standin_command(),
            "start_timeout": 5,
            "drain_timeout": 2,
            "rollback_window": 1.5,
            "stop_grace": 2,
        },
        "log": {"level": "info"},
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path, config, env=env) as gw:
        gw.wait_ready()
        yield gw, tmp_path


def version(gw: GatewayProcess) -> str:
    status, _, body = gw.request("/version", timeout=5)
    assert status == 200, (status, body)
    return body.decode()


def gateway_reload(gw: GatewayProcess, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "reload", "--port", str(gw.port), "--timeout", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reload_state(gw: GatewayProcess) -> dict[str, Any]:
    state = gw.ready_state()
    assert state is not None
    reload: dict[str, Any] = state["next"]["reload"]
    return reload


class Load:
    """Requests in a loop on one keep-alive connection until stopped: every answer recorded."""

    def __init__(self, gw: GatewayProcess, path: str = "/version") -> None:
        self.gw = gw
        self.path = path
        self.answers: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                self.answers.append((resp.status, resp.read().decode()))
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=10)
            time.sleep(0.01)
        conn.close()


def test_reload_switches_to_the_new_release_without_a_failed_request(
    deploy: tuple[GatewayProcess, Path],
) -> None:
    gw, root = deploy
    old_child = gw.child_pid()
    assert version(gw) == "a"
    point(root, release(root, "b"))
    with Load(gw) as load:
        time.sleep(0.3)
        done = gateway_reload(gw)
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    assert "serving" in done.stdout and "build-b" in done.stdout
    assert version(gw) == "b"
    assert load.errors == [] and load.answers, load.errors
    assert {status for status, _ in load.answers} == {200}
    seen = [body for _, body in load.answers]
    assert seen[0] == "a" and seen[-1] == "b"
    assert seen == sorted(seen)  # a, then b: never back and forth
    # The previous child is drained, kept for the rollback window, then stopped: no orphan.
    wait_until(lambda: not pid_alive(old_child), 15, "the previous child to stop")
    state = reload_state(gw)
    assert state["last"]["state"] == "ok" and state["last"]["build_id"] == "build-b"
    assert state["last"]["drain_seconds"] <= 2.5
    metrics = gw.request("/_gateway/metrics")[2].decode()
    assert 'gateway_reloads_total{outcome="ok"} 1.0' in metrics
    assert 'gateway_release_info{build_id="build-b"} 1.0' in metrics
    assert "Traceback" not in gw.log


def test_websocket_clients_of_the_hub_are_untouched_by_a_reload(
    deploy: tuple[GatewayProcess, Path],
) -> None:
    gw, root = deploy

    async def scenario() -> list[Any]:
        url = f"ws://127.0.0.1:{gw.port}/connection/websocket"
        async with websockets.connect(url, origin=f"http://127.0.0.1:{gw.port}") as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"id": 1, "connect": {"token": token()}}))
            await ws.recv()
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "news"}}))
            await ws.recv()
            point(root, release(root, "c"))
            done = await asyncio.to_thread(gateway_reload, gw)
            assert done.returncode == 0, done.stderr
            for i in range(3):
                await asyncio.to_thread(
                    gw.api, "publish", API_KEY, channel="news", data={"after_reload": i}
                )
            return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]

    pushes = asyncio.run(asyncio.wait_for(scenario(), 40))
    assert [p["push"]["pub"]["data"]["after_reload"] for p in pushes] == [0, 1, 2]


def test_a_release_that_does_not_start_is_refused_and_the_old_one_keeps_serving(
    deploy: tuple[GatewayProcess, Path],
) -> None:
    gw, root = deploy
    child = gw.child_pid()
    point(root, release(root, "broken", BROKEN="1"))
    with Load(gw) as load:
        done = gateway_reload(gw)
    assert done.returncode == 1
    assert "refused" in done.stderr and "did not start" in done.stderr, done.stderr
    assert version(gw) == "a" and gw.child_pid() == child
    assert load.errors == [] and {s for s, _ in load.answers} == {200}
    state = gw.ready_state()
    assert state is not None and state["http_status"] == 200
    assert state["next"]["reload"]["last"]["state"] == "failed"
    metrics = gw.request("/_gateway/metrics")[2].decode()
    assert 'gateway_reloads_total{outcome="failed"} 1.0' in metrics
    assert 'gateway_release_info{build_id="build-a"} 1.0' in metrics


def test_a_missing_release_is_refused_at_once(deploy: tuple[GatewayProcess, Path]) -> None:
    gw, root = deploy
    point(root, root / "releases" / "not-there")
    done = gateway_reload(gw)
    assert done.returncode == 1 and "does not exist" in done.stderr, done.stderr
    assert version(gw) == "a"


def test_a_release_that_crashes_right_after_the_switch_is_rolled_back(
    deploy: tuple[GatewayProcess, Path],
) -> None:
    gw, root = deploy
    point(root, release(root, "flaky", CRASH_AFTER="0.6"))
    done = gateway_reload(gw)
    assert done.returncode == 0  # it did start and serve
    wait_until(lambda: reload_state(gw)["last"]["state"] == "rolled_back", 10, "the rollback")
    assert version(gw) == "a"
    assert "rolled back" in gw.log


def test_a_second_reload_while_one_runs_is_refused(deploy: tuple[GatewayProcess, Path]) -> None:
    gw, root = deploy
    point(root, release(root, "slow", START_DELAY="1.5"))
    pid = int(gw.ready_state()["next"]["gateway_pid"])  # type: ignore[index]
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.3)
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: reload_state(gw)["generation"] == 2, 10, "two reload attempts")
    wait_until(lambda: not reload_state(gw)["reloading"], 15, "the first reload to finish")
    assert version(gw) == "slow"
    assert "a reload is already in progress" in gw.log


def test_the_previous_builds_static_files_stay_servable_after_a_reload(
    deploy: tuple[GatewayProcess, Path],
) -> None:
    gw, root = deploy
    status, _, body = gw.request("/_next/static/chunks/a.js")
    assert status == 200 and body == b"console.log('a')"
    point(root, release(root, "d"))
    assert gateway_reload(gw).returncode == 0
    wait_until(
        lambda: gw.request("/_next/static/chunks/d.js")[0] == 200, 10, "the new build's chunk"
    )
    # A tab opened before the deploy still loads its chunk (from memory: not in release d).
    status, _, body = gw.request("/_next/static/chunks/a.js")
    assert status == 200 and body == b"console.log('a')"
    state = gw.ready_state()
    assert state is not None and state["static"]["previous_builds"] == ["build-a"]


def test_every_worker_switches_on_a_reload(tmp_path: Path) -> None:
    from conftest import require
    from support.redis import redis_available

    require(redis_available(), "a Redis server on 127.0.0.1:6379 (apt-get install redis-server)")
    point(tmp_path, release(tmp_path, "a"))
    config = {
        "next": {
            "dir": str(tmp_path / "current"),
            "command": standin_command(),
            "drain_timeout": 2,
            "rollback_window": 0.5,
        },
        "server": {"workers": 2},
        "engine": {"kind": "redis", "redis_url": "redis://127.0.0.1:6379/13", "prefix": "reload"},
    }
    with GatewayProcess(tmp_path, config, env={"WS_SECRET": SECRET}) as gw:
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") >= 2, 20, "both workers")
        point(tmp_path, release(tmp_path, "b"))
        done = gateway_reload(gw)
        assert done.returncode == 0, done.stderr
        # Each request is a new connection, spread by the kernel over both workers.
        answers = {version(gw) for _ in range(40)}
        assert answers == {"b"}
        workers = {gw.request("/_gateway/ready")[2] for _ in range(20)}
        assert all(json.loads(w)["next"]["build_id"] == "build-b" for w in workers)
        assert len({json.loads(w)["worker"]["pid"] for w in workers}) == 2


@pytest.mark.parametrize("broken", [False, True])
def test_the_deploy_script_builds_switches_and_reloads_or_puts_the_link_back(
    deploy: tuple[GatewayProcess, Path], broken: bool
) -> None:
    gw, root = deploy
    source = root / "src"
    source.mkdir()
    (source / "VERSION").write_text("from-script")
    (source / "node_modules").mkdir()  # never copied into a release
    previous = os.readlink(root / "current")
    build = "mkdir -p .next && echo script-build > .next/BUILD_ID" + (
        " && touch BROKEN" if broken else ""
    )
    env = {
        **os.environ,
        "NPM_CI": "true",
        "BUILD": build,
        "GATEWAY": str(Path(sys.executable).parent / "gateway"),
    }
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "deploy-release.sh"),
            str(source),
            str(root),
            "--port",
            str(gw.port),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if broken:
        assert done.returncode == 1, done.stdout + done.stderr
        assert os.readlink(root / "current") == previous  # the link is back
        assert version(gw) == "a"
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert version(gw) == "from-script"
        current = Path(os.readlink(root / "current"))
        assert current.parent == root / "releases" and not (current / "node_modules").exists()


def test_the_previous_child_drains_when_its_requests_end_not_at_the_timeout(
    tmp_path: Path,
) -> None:
    # Requests in flight at the switch used to hand their connection back to the pool under
    # the old child's address, where it stayed: the old child then always waited the full
    # drain timeout (bench/deploy.py measured 16-30 s).
    point(tmp_path, release(tmp_path, "a"))
    config = {
        "next": {
            "dir": str(tmp_path / "current"),
            "command": standin_command(),
            "drain_timeout": 20,
            "rollback_window": 0.5,
        }
    }
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready()
        old_child = gw.child_pid()
        point(tmp_path, release(tmp_path, "b"))
        slow = "/slow?s=0.4"  # in flight at the switch, whenever it comes
        with Load(gw, slow), Load(gw, slow), Load(gw, slow):
            time.sleep(0.3)
            assert gateway_reload(gw).returncode == 0
            time.sleep(1.0)
        wait_until(
            lambda: reload_state(gw)["last"].get("drain_seconds") is not None, 10, "the drain"
        )
        assert reload_state(gw)["last"]["drain_seconds"] < 5
        wait_until(lambda: not pid_alive(old_child), 10, "the previous child to stop")
        assert "drain timeout" not in gw.log
