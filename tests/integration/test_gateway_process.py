"""`gateway run` as a real process, with a stand-in child: 503s, restarts, shutdown, orphans."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from support.procs import GatewayProcess, group_members, pid_alive, standin_command, wait_until


def config(*flags: str, **next_overrides: Any) -> dict[str, Any]:
    nxt: dict[str, Any] = {
        "dir": ".",
        "command": standin_command(*flags),
        "stop_grace": 3.0,
        "restart": {"backoff_initial": 0.2, "backoff_max": 5.0, "stable_after": 60.0},
    }
    nxt.update(next_overrides)
    return {"next": nxt}


def test_requests_get_503_with_retry_after_while_the_child_starts(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, config("--start-delay", "2")) as gw:
        wait_until(lambda: gw.ready_state(), 10, "the gateway to listen")
        status, headers, body = gw.request("/some/page", headers={"Accept": "application/json"})
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert headers["Cache-Control"] == "no-store"
        assert json.loads(body)["error"] == "service_unavailable"

        status, headers, body = gw.request("/", headers={"Accept": "text/html,*/*"})
        assert status == 503 and headers["Content-Type"].startswith("text/html")
        assert b'http-equiv="refresh"' in body

        ready = gw.ready_state()
        assert ready is not None and ready["http_status"] == 503
        assert ready["next"]["state"] == "starting"

        gw.wait_ready(10)
        status, _, body = gw.request("/")
        assert status == 200 and body.startswith(b"standin ")


def test_health_is_up_even_when_the_child_is_not(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, config("--never-ready")) as gw:
        status, _, body = wait_until(lambda: _try(gw, "/_gateway/health"), 10, "health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, _, body = gw.request("/_gateway/unknown")
        assert status == 404 and json.loads(body)["error"] == "not_found"


def _try(gw: GatewayProcess, path: str) -> tuple[int, Any, bytes] | None:
    try:
        return gw.request(path, timeout=2)
    except OSError:
        return None


def test_kill9_of_the_child_gives_503_then_a_new_child(tmp_path: Path) -> None:
    cfg = config(restart={"backoff_initial": 1.5, "backoff_max": 1.5, "stable_after": 60.0})
    with GatewayProcess(tmp_path, cfg) as gw:
        gw.wait_ready()
        old = gw.child_pid()
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        # A request racing the child's death gets 503 (never a hang, a 500 or a reset).
        statuses = set()
        while time.monotonic() - killed_at < 0.5:
            statuses.add(gw.request("/", timeout=5)[0])
        assert statuses <= {200, 503} and 503 in statuses
        state = gw.wait_ready(15)
        assert state["next"]["pid"] != old and state["next"]["restarts"] == 1
        assert state["next"]["last_exit"] == "was killed by SIGKILL"
        assert not pid_alive(old)
        assert gw.request("/")[0] == 200


def test_a_keep_alive_client_posting_through_a_child_restart_gets_only_503s_it_can_follow(
    tmp_path: Path,
) -> None:
    # A 503 answered before the body is read closes the connection: it must say so
    # (Connection: close), or a client that reuses connections sends its next request into a
    # closed socket (EOF, reset). Issue 15 counted 19-38 such failures per child restart.
    cfg = config("--start-delay", "1.0")  # every start: a second of 503s at least
    with GatewayProcess(tmp_path, cfg) as gw:
        gw.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        sockets: set[int] = set()

        def post() -> http.client.HTTPResponse:
            conn.request(
                "POST",
                "/form",
                body=b"x" * 20_000,
                headers={"Content-Type": "text/plain", "Accept": "application/json"},
            )
            assert conn.sock is not None
            sockets.add(id(conn.sock))
            resp = conn.getresponse()  # an EOF or a reset here fails the test
            resp.read()
            return resp

        try:
            for _ in range(3):
                assert post().status == 200
            assert len(sockets) == 1  # the client does reuse its connection
            os.kill(gw.child_pid(), signal.SIGKILL)
            statuses: list[int] = []
            closes: list[bool] = []
            deadline = time.monotonic() + 20
            while not (503 in statuses and statuses[-1] == 200):
                assert time.monotonic() < deadline, statuses
                resp = post()
                statuses.append(resp.status)
                if resp.status == 503:
                    assert int(resp.headers["Retry-After"]) >= 1
                    # Answered before the body was read: the connection closes, and says so.
                    # (A 503 once the body is read keeps it: the next post() reuses it.)
                    closes.append(resp.headers.get("Connection") == "close")
                else:
                    assert resp.status == 200, (resp.status, resp.headers)
                time.sleep(0.01)
            for _ in range(5):  # after the restart, the requests that follow succeed
                assert post().status == 200
        finally:
            conn.close()
        assert statuses.count(503) >= 10, statuses  # it did post through the restart
        assert sum(closes) >= 5, closes  # most were answered before the body was read


def test_crash_loop_is_reported_by_ready(tmp_path: Path) -> None:
    cfg = config(
        "--exit-after",
        "0.1",
        "--exit-code",
        "7",
        restart={"backoff_initial": 0.05, "max_failures": 2},
    )
    with GatewayProcess(tmp_path, cfg) as gw:
        gw.wait_log("giving up", 20)
        ready = gw.ready_state()
        assert ready is not None and ready["http_status"] == 503
        assert ready["next"]["state"] == "failed"
        assert "exited with status 7" in ready["next"]["reason"]
        status, headers, body = gw.request("/", headers={"Accept": "application/json"})
        assert status == 503 and headers["Retry-After"] == "30"
        assert "given up" in json.loads(body)["detail"]


def test_sigterm_stops_everything_and_exits_0(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, config("--grandchild")) as gw:
        gw.wait_ready()
        child = gw.child_pid()
        grandchild = int(gw.log.split("grandchild pid ")[1].split()[0])
        assert pid_alive(grandchild)
        assert gw.stop(signal.SIGTERM) == 0
        assert group_members(child) == []
        assert not pid_alive(grandchild)
        assert "stopped" in gw.log
        assert "Traceback" not in gw.log


def test_sigint_escalates_for_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, config("--ignore-sigterm", stop_grace=1.0)) as gw:
        gw.wait_ready()
        child = gw.child_pid()
        started = time.monotonic()
        assert gw.stop(signal.SIGINT) == 0
        assert 1.0 <= time.monotonic() - started < 6
        assert group_members(child) == []
        assert "sending SIGKILL" in gw.log


def test_kill9_of_the_gateway_takes_the_child_with_it(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, config()) as gw:
        gw.wait_ready()
        child = gw.child_pid()
        assert gw.proc is not None
        gw.proc.kill()
        gw.proc.wait(5)
        wait_until(lambda: not pid_alive(child), 5, "the orphaned child to die")


def test_a_failed_start_leaves_no_process(tmp_path: Path) -> None:
    cfg = config("--never-ready", "--grandchild", start_timeout=1.0, restart={"max_failures": 1})
    with GatewayProcess(tmp_path, cfg) as gw:
        gw.wait_log("giving up", 15)
        pids = [
            int(line.split("standin pid ")[1].split()[0])
            for line in gw.lines
            if "standin pid " in line
        ]
        grandchildren = [
            int(line.split("grandchild pid ")[1]) for line in gw.lines if "grandchild pid " in line
        ]
        assert pids and grandchildren
        for pid in pids + grandchildren:
            assert not pid_alive(pid)
        assert gw.stop() == 0
