"""Several worker processes on one port (``gateway run --workers N``).

The parent process owns the Next.js child and N workers; it serves nothing itself. Each worker
binds the public port with SO_REUSEPORT (the kernel spreads connections over them), proxies
HTTP to the one Next.js child and runs a realtime node on the Redis engine, which is what makes
a publication reach subscribers in every worker.

Parent -> worker: the Next.js child's state, one JSON line on the worker's stdin at every change
(``{"state": "running", "port": 41234, ...}``). A worker whose stdin closes (the parent died)
stops; a worker that dies is restarted with capped exponential backoff and full jitter. Workers
also get PR_SET_PDEATHSIG, so a ``kill -9`` of the parent takes them along.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from gateway.config import GatewayConfig
from gateway.supervisor import Backoff, ChildState, _die_with_parent

log = logging.getLogger("gateway.workers")

CONFIG_ENV = "GATEWAY_WORKER_CONFIG"
ID_ENV = "GATEWAY_WORKER_ID"


class RemoteUpstream:
    """The Next.js child as a worker sees it: through the parent's messages."""

    def __init__(self) -> None:
        self.state = ChildState.STARTING
        self.port: int | None = None
        self._retry_after = 1
        self._snapshot: dict[str, Any] = {"state": "starting"}
        self._listeners: list[Callable[[ChildState], None]] = []
        self.parent_gone = asyncio.Event()

    def target(self) -> tuple[str, int] | None:
        if self.state is ChildState.RUNNING and self.port is not None:
            return "127.0.0.1", self.port
        return None

    def retry_after(self) -> int:
        return self._retry_after

    def status(self) -> str:
        return self.state.value

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    def add_listener(self, callback: Callable[[ChildState], None]) -> None:
        self._listeners.append(callback)

    def update(self, message: dict[str, Any]) -> None:
        self._snapshot = message.get("snapshot", {})
        self._retry_after = int(message.get("retry_after", 1))
        state = ChildState(message.get("state", "starting"))
        port = message.get("port")
        if state is not self.state or port != self.port:  # a reload keeps RUNNING, moves port
            self.state, self.port = state, port
            for callback in list(self._listeners):
                callback(state)

    async def follow(self) -> None:
        """Read the parent's messages from stdin until it closes."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                self.update(json.loads(line))
            except (ValueError, KeyError) as e:
                log.warning("bad message from the parent: %s", e)
        self.parent_gone.set()


def state_message(supervisor: Any) -> bytes:
    """What workers need to know of the child, as one line."""
    snapshot = supervisor.snapshot()
    message = {
        "state": supervisor.state.value,
        "port": supervisor.port,
        "retry_after": supervisor.retry_after(),
        "snapshot": snapshot,
    }
    return (json.dumps(message) + "\n").encode()


class WorkerPool:
    """Starts, watches and stops the worker processes (in the parent)."""

    def __init__(self, cfg: GatewayConfig, count: int, grace: float = 15.0) -> None:
        self.cfg = cfg
        self.count = count
        self.grace = grace
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_message = b'{"state": "starting"}\n'
        self.restarts = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(1, self.count + 1):
            self._tasks.append(loop.create_task(self._keep(index)))

    def broadcast(self, message: bytes) -> None:
        self._last_message = message
        for proc in self.procs.values():
            self._send(proc, message)

    @staticmethod
    def _send(proc: asyncio.subprocess.Process, message: bytes) -> None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            try:
                proc.stdin.write(message)
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; restart it when it dies, with backoff."""
        backoff = Backoff(0.5, 10.0)
        failures = 0
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(dataclasses.asdict(self.cfg))
        env[ID_ENV] = str(index)
        while not self._stopping:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "_worker",
                stdin=asyncio.subprocess.PIPE,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            self.procs[index] = proc
            self._send(proc, self._last_message)
            log.info("worker %d started (pid %d)", index, proc.pid)
            code = await proc.wait()
            del self.procs[index]
            if self._stop_requested():
                return
            failures = 0 if time.monotonic() - started > 30 else failures + 1
            delay = backoff.delay(max(1, failures))
            self.restarts += 1
            log.warning("worker %d exited with status %s; restarting in %.2f s", index, code, delay)
            await asyncio.sleep(delay)

    def _stop_requested(self) -> bool:  # a method: the flag changes while we await
        return self._stopping

    async def stop(self) -> None:
        """SIGTERM every worker (they close their sockets gracefully), SIGKILL after grace."""
        self._stopping = True
        procs = list(self.procs.values())
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=self.grace)
            for proc in procs:
                if proc.returncode is None:
                    log.warning(
                        "worker pid %d did not stop in %.0f s: SIGKILL", proc.pid, self.grace
                    )
                    proc.kill()
                    await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
