"""Test helpers for real processes: free ports, process groups, a gateway under test."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin_child.py")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def http_request(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    assert url.startswith("http://")
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def spawn_logged(
    cmd: list[str], cwd: Path, env: Mapping[str, str], lines: list[str]
) -> tuple[subprocess.Popen[str], threading.Thread]:
    """Start ``cmd`` in its own process group, stdout and stderr collected into ``lines`` by a
    thread (through a pipe, as a container or supervisord would read them)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, reader


def standin_command(*flags: str) -> list[str]:
    """``next.command`` that runs the stand-in child with ``flags``."""
    return [sys.executable, str(STANDIN), "--port", "{port}", *flags]


class GatewayProcess:
    """``python -m gateway run`` as a subprocess, with its log captured.

    Use as a context manager; on exit it stops the gateway (SIGTERM, then SIGKILL of its
    group) so no test leaves a process behind.
    """

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.port = free_port()
        self.env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config_path),
            "--port",
            str(self.port),
            *self.args,
        ]
        self.proc, self._reader = spawn_logged(cmd, ROOT, self.env, self.lines)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, **kwargs: Any) -> tuple[int, http.client.HTTPMessage, bytes]:
        return http_request(self.url(path), **kwargs)

    def api(self, method: str, key: str, **params: Any) -> dict[str, Any]:
        """One server API call (``/_gateway/api/<method>``); the whole JSON reply."""
        status, _, body = self.request(
            f"/_gateway/api/{method}",
            method="POST",
            body=json.dumps(params).encode(),
            headers={"X-API-Key": key},
        )
        assert status == 200, body
        reply: dict[str, Any] = json.loads(body)
        return reply

    def ready_state(self) -> dict[str, Any] | None:
        try:
            status, _, body = self.request("/_gateway/ready", timeout=2)
        except OSError:
            return None
        state = json.loads(body)
        state["http_status"] = status
        return state

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log}")
            state = self.ready_state()
            return state if state and state["http_status"] == 200 else None

        return wait_until(ready, timeout, "the gateway to report ready")

    def start_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start and wait until ready; on failure, stop it before raising (nothing leaks)."""
        self.start()
        try:
            return self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log, timeout, f"{text!r} in the gateway log:\n{self.log}")

    def child_pid(self) -> int:
        state = self.ready_state()
        assert state and state["next"]["pid"], state
        return int(state["next"]["pid"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the gateway and return its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return rc

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.stop(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def open_response(
    url: str, method: str = "GET", headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send a request and return once the response head is in; read the body as it streams
    with ``resp.read1()``. Close the connection to go away mid-response."""
    hostport = url[len("http://") :].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    conn.request(method, url[len("http://") + len(hostport) :] or "/", headers=dict(headers or {}))
    return conn, conn.getresponse()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
