"""A supervised child process: spawn, readiness probe, restart with backoff, stop.

The child runs in its own process group, so stopping it stops everything it started. On Linux
it is also tied to the gateway with ``PR_SET_PDEATHSIG``: if the gateway itself is killed with
SIGKILL, the kernel kills the child too.

State machine::

    STARTING --probe answers--> RUNNING --exit--> BACKOFF --delay--> STARTING
        |  \\--exit / deadline--> BACKOFF                  \\--too many failures--> FAILED
        stop() from any state --> STOPPING --> STOPPED

Readiness means "answers HTTP": any response to the probe counts, a 404 or a 500 included,
because it proves the server accepted a connection and parsed a request.

Compared with simpervisor, restarts back off exponentially with full jitter (AWS architecture
blog, "Exponential Backoff And Jitter"), a crash loop ends in a reported FAILED state rather
than spinning forever, and nothing here calls ``sys.exit``: the owner decides.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.observability import redact_uri

log = logging.getLogger("gateway.supervisor")


class ChildState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass
class ChildSpec:
    """What to run and how to look after it."""

    name: str
    """Short name used as the log prefix of the child's output (``[next] ...``)."""
    argv: Callable[[int], list[str]]
    """Builds the command line for a given loopback port."""
    cwd: str
    env: Mapping[str, str]
    port_env: Callable[[int], Mapping[str, str]] = lambda port: {}
    """Environment that depends on the loopback port (a server that reads ``PORT``)."""
    host: str = "127.0.0.1"
    port: int = 0
    """Fixed loopback port, or 0 to pick a free one at every start."""
    ready_path: str = "/"
    start_timeout: float = 60.0
    stop_grace: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_failures: int = 5
    stable_after: float = 30.0
    probe_interval: float = 0.05


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter.

    After the n-th consecutive failure the delay is uniform in
    ``[0, min(cap, initial * 2**(n-1))]``; the jitter spreads restarts of processes that crashed
    together.
    """

    initial: float
    cap: float
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # min() first on the exponent keeps 2**n from overflowing after thousands of failures.
        return float(min(self.cap, self.initial * 2 ** min(failures - 1, 60)))

    def delay(self, failures: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(failures))


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. A race with another process is possible; if the
    child then fails to bind, it exits and the next start picks another port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def probe_http(host: str, port: int, path: str, timeout: float = 2.0) -> bool:
    """True if something on ``host:port`` answers an HTTP request with a status line."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(
            f"HEAD {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: gateway-probe\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.close()


class _ChildProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also reports the moment the process exits.

    ``asyncio.subprocess.Process.wait()`` returns only once the process has exited *and* its
    pipes are closed; a grandchild that inherited stdout would keep it waiting forever.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


@dataclass
class _Child:
    """One run of the child process."""

    pid: int
    transport: asyncio.SubprocessTransport
    protocol: _ChildProtocol

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    async def wait(self) -> int:
        await asyncio.shield(self.protocol.exited)
        return self.transport.get_returncode() or 0


def _die_with_parent() -> None:  # runs in the forked child, before exec
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL to the child when the gateway dies, so a
    # `kill -9` of the gateway cannot leave an orphan Next.js behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class ChildSupervisor:
    """Keeps one child process running and tells whether it is ready.

    Call :meth:`start` once, read :attr:`state` / :meth:`snapshot` / :meth:`target` at any time,
    and call :meth:`stop` once to end it; :meth:`stop` returns when no process of the child's
    group is left.
    """

    def __init__(self, spec: ChildSpec, backoff: Backoff | None = None) -> None:
        self.spec = spec
        self.backoff = backoff or Backoff(spec.backoff_initial, spec.backoff_max)
        self.state = ChildState.STOPPED
        self.pid: int | None = None
        self.port: int | None = None
        self.restarts = 0
        self.failures = 0
        self.last_exit: str | None = None
        self.failure_reason: str | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.restart_at: float | None = None
        self.backoff_ceiling = 0.0
        self.last_start_duration: float | None = None
        self._proc: _Child | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pump_tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[ChildState], None]] = []

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start supervising in the background; returns at once."""
        if self._task is not None:
            raise RuntimeError("ChildSupervisor.start() called twice")
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the child answers HTTP; False on timeout or if supervision ended."""
        ready = asyncio.ensure_future(self._ready.wait())
        waiters: set[asyncio.Future[Any]] = {ready}
        if self._task is not None:
            waiters.add(self._task)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        return self.state is ChildState.RUNNING

    def add_listener(self, callback: Callable[[ChildState], None]) -> None:
        """Call ``callback(state)`` on every state change (e.g. to rebuild a cache on restart)."""
        self._listeners.append(callback)

    def target(self) -> tuple[str, int] | None:
        """Where to send requests now, or None if the child is not ready."""
        if self.state is ChildState.RUNNING and self.port is not None:
            return self.spec.host, self.port
        return None

    def status(self) -> str:
        return self.state.value

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying while the child is not ready."""
        if self.state is ChildState.BACKOFF and self.restart_at is not None:
            return max(1, int(self.restart_at - time.monotonic() + 1.999))
        if self.state is ChildState.FAILED:
            return 30
        return 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready description for ``/_gateway/ready`` and the logs."""
        now = time.monotonic()
        return {
            "state": self.state.value,
            "pid": self.pid,
            "port": self.port,
            "restarts": self.restarts,
            "consecutive_failures": self.failures,
            "last_exit": self.last_exit,
            "reason": self.failure_reason,
            "uptime_s": round(now - self.ready_at, 3) if self.ready_at and self.pid else None,
            "start_duration_s": (
                round(self.last_start_duration, 3) if self.last_start_duration is not None else None
            ),
            "backoff_ceiling_s": self.backoff_ceiling,
            "restart_in_s": (
                round(max(0.0, self.restart_at - now), 3)
                if self.state is ChildState.BACKOFF and self.restart_at
                else None
            ),
        }

    async def stop(self) -> None:
        """Stop the child (SIGTERM to its group, SIGKILL after the grace) and supervision."""
        self._stopping = True
        self._wake.set()
        if self.state not in (ChildState.STOPPED, ChildState.FAILED):
            self._set_state(ChildState.STOPPING)
        async with self._lock:
            await self._terminate(self.spec.stop_grace)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._set_state(ChildState.STOPPED)

    async def kill_now(self) -> None:
        """Stop without grace (a second Ctrl-C)."""
        self._stopping = True
        self._wake.set()
        await self._terminate(0.0)

    def _stop_requested(self) -> bool:
        return self._stopping

    # -- supervision loop ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping:
            ran_for = await self._run_once()
            if self._stop_requested():  # stop() may have run while we awaited
                return
            if ran_for is not None and ran_for >= self.spec.stable_after:
                self.failures = 0
            self.failures += 1
            if self.failures >= self.spec.max_failures:
                self.failure_reason = (
                    f"{self.spec.name} failed {self.failures} times in a row "
                    f"(last: {self.last_exit}); giving up"
                )
                log.error("%s; /_gateway/ready reports the failure", self.failure_reason)
                self._set_state(ChildState.FAILED)
                return
            self.backoff_ceiling = self.backoff.ceiling(self.failures)
            delay = self.backoff.delay(self.failures)
            self.restart_at = time.monotonic() + delay
            self._set_state(ChildState.BACKOFF)
            log.warning(
                "%s %s; restarting in %.2f s (failure %d of %d allowed, backoff ceiling %.2f s)",
                self.spec.name,
                self.last_exit,
                delay,
                self.failures,
                self.spec.max_failures,
                self.backoff_ceiling,
            )
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            if not self._stopping:
                self.restarts += 1

    async def _run_once(self) -> float | None:
        """Run the child once; returns how long it was ready (None if it never was)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._stopping:
                return None
            self.port = self.spec.port or pick_free_port(self.spec.host)
            self._set_state(ChildState.STARTING)
            self.started_at = loop.time()
            try:
                proc = await self._spawn(self.port)
            except OSError as e:
                self.last_exit = f"could not be started: {e.strerror or e}"
                log.error("%s %s", self.spec.name, self.last_exit)
                return None
            self._proc = proc
            self.pid = proc.pid
        log.info(
            "%s starting: pid %d on %s:%d", self.spec.name, proc.pid, self.spec.host, self.port
        )
        outcome = await self._await_ready(proc)
        if outcome == "ready":
            self.last_start_duration = loop.time() - self.started_at
            self.ready_at = time.monotonic()
            self.failure_reason = None
            self._set_state(ChildState.RUNNING)
            self._ready.set()
            log.info(
                "%s ready in %.2f s (pid %d, %s:%d)",
                self.spec.name,
                self.last_start_duration,
                proc.pid,
                self.spec.host,
                self.port,
            )
            ready_since = loop.time()
            await proc.wait()
            ran_for: float | None = loop.time() - ready_since
            # Stop routing to it at once, before the bookkeeping below yields to the loop.
            self.restart_at = None
            self._set_state(ChildState.STOPPING if self._stopping else ChildState.BACKOFF)
        else:
            ran_for = None
            if outcome == "deadline":
                self.failure_reason = (
                    f"{self.spec.name} did not answer HTTP on {self.spec.host}:{self.port}"
                    f"{self.spec.ready_path} within {self.spec.start_timeout:g} s"
                )
                log.error("%s; stopping it", self.failure_reason)
                async with self._lock:
                    await self._terminate(self.spec.stop_grace)
            await proc.wait()
        self._ready.clear()
        async with self._lock:
            self._reap_group(proc)
        if not self._stopping:
            self.last_exit = _describe_exit(proc.returncode or 0)
            if outcome == "deadline":
                self.last_exit = f"did not become ready within {self.spec.start_timeout:g} s"
        # The pipes close when the last process holding them exits; one that left our group
        # (setsid) could hold them forever, so do not wait on it for long.
        _, pending = (
            await asyncio.wait(self._pump_tasks, timeout=1.0) if self._pump_tasks else ((), ())
        )
        for task in pending:
            task.cancel()
        self._pump_tasks = []
        return ran_for

    async def _await_ready(self, proc: _Child) -> str:
        """Probe until the child answers ("ready"), exits ("exited") or runs out of time."""
        assert self.port is not None
        deadline = asyncio.get_running_loop().time() + self.spec.start_timeout
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                if exited.done():
                    return "exited"
                if self._stopping:
                    return "stopping"
                if await probe_http(self.spec.host, self.port, self.spec.ready_path):
                    return "ready" if not exited.done() else "exited"
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return "deadline"
                await asyncio.wait({exited}, timeout=min(self.spec.probe_interval, remaining))
        finally:
            exited.cancel()

    async def _spawn(self, port: int) -> _Child:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        transport, protocol = await loop.subprocess_exec(
            lambda: _ChildProtocol(limit=1 << 20, loop=loop),  # longest output line kept whole
            *self.spec.argv(port),
            cwd=self.spec.cwd,
            env={**self.spec.env, **self.spec.port_env(port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own session and process group: pgid == pid
            **kwargs,
        )
        assert protocol.stdout is not None and protocol.stderr is not None
        self._pump_tasks = [
            asyncio.ensure_future(self._pump(protocol.stdout, logging.INFO)),
            asyncio.ensure_future(self._pump(protocol.stderr, logging.WARNING)),
        ]
        return _Child(transport.get_pid(), transport, protocol)

    async def _pump(self, stream: asyncio.StreamReader, level: int) -> None:
        """Copy the child's output into our log, one prefixed record per line."""
        child_log = logging.getLogger(f"child.{self.spec.name}")
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than the limit: asyncio dropped it, go on with the next
                continue
            except OSError:
                return
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            if text:  # a URL it prints loses its token-like query values, as in our log
                child_log.log(level, "%s", redact_uri(text))

    async def _terminate(self, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL it after ``grace``; reap everything."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
            except TimeoutError:
                log.warning(
                    "%s did not exit %.1f s after SIGTERM; sending SIGKILL", self.spec.name, grace
                )
                self._signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        self._reap_group(proc)

    def _reap_group(self, proc: _Child) -> None:
        # The leader may be gone while processes it started still hold the group: end them too.
        # The kernel does not reuse a pid as long as a group with that id exists, so the pgid
        # cannot name somebody else's processes here.
        self._signal_group(proc.pid, signal.SIGKILL)
        if self._proc is proc:
            self.pid = None
            self._proc = None
        proc.transport.close()

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _set_state(self, state: ChildState) -> None:
        if state is self.state:
            return
        self.state = state
        for callback in list(self._listeners):
            try:
                callback(state)
            except Exception:  # a listener's bug must not stop supervision
                log.exception("state listener failed")
