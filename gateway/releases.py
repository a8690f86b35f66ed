"""The Next.js app as the gateway serves it: the active release's child, and reloads.

A *release* is a built Next.js app directory. ``next.dir`` may be a symlink (``current ->
releases/<id>``): it is resolved when a child starts, so the running child never sees the link
move, and a reload re-resolves it.

Reload (SIGHUP, or ``gateway reload``)::

    resolve next.dir -> check the release (a build is there) -> start a second child on a new
    loopback port -> it answers HTTP within next.start_timeout -> SWITCH (new requests, hooks
    and upgrades go to it) -> the old child drains (connections from the gateway to it close,
    at most next.drain_timeout) and stays alive for next.rollback_window -> stop it
    (SIGTERM, grace, SIGKILL of its group)

If the new child exits or never answers, the old one never stopped serving: the attempt is
recorded as failed (``/_gateway/ready`` shows it, ``gateway reload`` exits 1 with the reason).
If the new child exits within ``rollback_window`` after the switch, requests switch back to the
old one, which was kept for that. One reload at a time: another request while one runs is
refused. The realtime hub is not touched: its WebSockets belong to the gateway, not to Next.

Implements the :class:`~gateway.proxy.upstream.Upstream` interface the proxy, the hooks and the
workers' state messages use: everything is asked of the active child.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewayConfig
from gateway.supervisor import ChildSpec, ChildState, ChildSupervisor

log = logging.getLogger("gateway.releases")


@dataclass
class ReloadAttempt:
    """One reload, for ``/_gateway/ready``, the metrics and ``gateway reload``."""

    generation: int
    started_at: float  # Unix seconds
    release: str = ""
    build_id: str | None = None
    state: str = "reloading"  # reloading | ok | failed | rolled_back
    error: str | None = None
    switch_seconds: float | None = None
    """From the reload request to the new child serving."""
    drain_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def read_build_id(release_dir: str) -> str | None:
    try:
        with open(os.path.join(release_dir, ".next", "BUILD_ID"), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def established_connections(port: int) -> int:
    """TCP connections in ESTABLISHED state to ``127.0.0.1:port`` on this machine (Linux
    /proc): how many connections the gateway (any worker) still has to an old child."""
    wanted = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    # local_address rem_address st: the child's side is the local one.
                    if fields[1].endswith(wanted) and fields[3] == "01":
                        count += 1
        except (OSError, StopIteration):
            continue
    return count


class Releases:
    def __init__(
        self,
        cfg: GatewayConfig,
        make_spec: Callable[[str], ChildSpec],
        check_release: Callable[[str], str | None],
        connections_to: Callable[[int], int] = established_connections,
    ) -> None:
        self.cfg = cfg
        self._make_spec = make_spec
        self._check_release = check_release
        self._connections_to = connections_to
        self.release_dir = os.path.realpath(cfg.next.dir)
        self.build_id = read_build_id(self.release_dir)
        self.active = self._supervisor(self.release_dir)
        self._listeners: list[Callable[[ChildState], None]] = []
        self._retiring: set[ChildSupervisor] = set()
        self._reloading: asyncio.Lock = asyncio.Lock()
        self.generation = 0
        self.attempts: collections.deque[ReloadAttempt] = collections.deque(maxlen=10)
        self.reloads = collections.Counter[str]()

    def _supervisor(self, release_dir: str) -> ChildSupervisor:
        sup = ChildSupervisor(self._make_spec(release_dir))
        sup.add_listener(lambda state: self._forward(sup, state))
        return sup

    def _forward(self, sup: ChildSupervisor, state: ChildState) -> None:
        if sup is self.active:
            for callback in list(self._listeners):
                callback(state)

    # -- the Upstream interface: the active child -------------------------------------------

    @property
    def state(self) -> ChildState:
        return self.active.state

    @property
    def port(self) -> int | None:
        return self.active.port

    @property
    def pid(self) -> int | None:
        return self.active.pid

    def target(self) -> tuple[str, int] | None:
        return self.active.target()

    def retry_after(self) -> int:
        return self.active.retry_after()

    def status(self) -> str:
        return self.active.status()

    def add_listener(self, callback: Callable[[ChildState], None]) -> None:
        self._listeners.append(callback)

    def snapshot(self) -> dict[str, Any]:
        out = self.active.snapshot()
        out["release"] = self.release_dir
        out["build_id"] = self.build_id
        out["reload"] = self.reload_snapshot()
        out["gateway_pid"] = os.getpid()  # the process to send SIGHUP to (the parent)
        return out

    def reload_snapshot(self) -> dict[str, Any]:
        last = self.attempts[-1].as_dict() if self.attempts else None
        return {
            "generation": self.generation,
            "reloading": self._reloading.locked(),
            "last": last,
            "ok": self.reloads["ok"],
            "failed": self.reloads["failed"] + self.reloads["rolled_back"],
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.active.start()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        return await self.active.wait_ready(timeout)

    async def stop(self) -> None:
        await asyncio.gather(
            self.active.stop(), *(s.stop() for s in list(self._retiring)), return_exceptions=True
        )

    async def kill_now(self) -> None:
        await asyncio.gather(
            self.active.kill_now(),
            *(s.kill_now() for s in list(self._retiring)),
            return_exceptions=True,
        )

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> ReloadAttempt:
        """Start the release ``next.dir`` names now and switch to it once it serves; returns
        when the attempt is decided (switched, or refused with the old child serving). The old
        child is drained and stopped in the background."""
        self.generation += 1
        attempt = ReloadAttempt(self.generation, time.time())
        self.attempts.append(attempt)
        if self._reloading.locked():
            self._refuse(attempt, "a reload is already in progress")
        else:
            async with self._reloading:
                await self._reload(attempt)
        self._forward(self.active, self.active.state)  # tell listeners (workers) the outcome
        return attempt

    def _refuse(self, attempt: ReloadAttempt, error: str) -> ReloadAttempt:
        attempt.state, attempt.error = "failed", error
        self.reloads["failed"] += 1
        log.error(
            "reload %d refused: %s; the current release keeps serving", attempt.generation, error
        )
        return attempt

    async def _reload(self, attempt: ReloadAttempt) -> ReloadAttempt:
        started = time.monotonic()
        # A readlink or two on a local disk: not worth a thread (ASYNC240 is about slow ones).
        release = os.path.realpath(self.cfg.next.dir)  # noqa: ASYNC240
        attempt.release, attempt.build_id = release, read_build_id(release)
        log.info("reload %d: starting %s (build %s)", attempt.generation, release, attempt.build_id)
        problem = self._check_release(release)
        if problem is not None:
            return self._refuse(attempt, problem)
        if self.active.state is not ChildState.RUNNING:
            return self._refuse(
                attempt, f"the current child is {self.active.state.value}: restart instead"
            )
        candidate = self._supervisor(release)
        # Until the switch has held for rollback_window, a failure ends the attempt: no
        # restart with backoff of a release that cannot start.
        normal_failures = candidate.spec.max_failures
        candidate.spec.max_failures = 1
        candidate.start()
        if not await candidate.wait_ready(self.cfg.next.start_timeout + 5):
            reason = candidate.last_exit or "it did not start"
            await candidate.stop()
            return self._refuse(attempt, f"the new release did not start: {reason}")
        old, old_dir, old_build = self.active, self.release_dir, self.build_id
        self.active, self.release_dir, self.build_id = candidate, release, attempt.build_id
        attempt.switch_seconds = round(time.monotonic() - started, 3)
        attempt.state = "ok"
        self.reloads["ok"] += 1
        self._forward(candidate, ChildState.RUNNING)  # listeners: new target, new static set
        log.info(
            "reload %d: switched to %s (build %s) in %.2f s; draining the previous child",
            attempt.generation,
            release,
            attempt.build_id,
            attempt.switch_seconds,
        )
        self._retiring.add(old)
        asyncio.get_running_loop().create_task(
            self._retire(attempt, old, old_dir, old_build, candidate, normal_failures)
        )
        return attempt

    async def _retire(
        self,
        attempt: ReloadAttempt,
        old: ChildSupervisor,
        old_dir: str,
        old_build: str | None,
        new: ChildSupervisor,
        normal_failures: int,
    ) -> None:
        """Drain the previous child, keep it for a rollback, then stop it."""
        cfg = self.cfg.next
        started = time.monotonic()
        window_ends = started + cfg.rollback_window
        drain_ends = started + cfg.drain_timeout
        drained_at: float | None = None
        port = old.port
        timed_out = False
        while True:
            now = time.monotonic()
            if drained_at is None and (port is None or self._connections_to(port) == 0):
                drained_at = now
            elif drained_at is None and now >= drain_ends:
                drained_at, timed_out = now, True
            if drained_at is not None and attempt.drain_seconds is None:
                attempt.drain_seconds = round(drained_at - started, 3)
            if new.state is not ChildState.RUNNING and now < window_ends:
                await self._roll_back(attempt, old, old_dir, old_build, new)
                return
            if drained_at is not None and now >= window_ends:
                break
            await asyncio.sleep(0.1)
        new.spec.max_failures = normal_failures
        self._retiring.discard(old)
        if timed_out:
            log.warning(
                "reload %d: the previous child still had %d connection(s) after the %g s "
                "drain timeout; stopping it (what is still running on it is cut)",
                attempt.generation,
                self._connections_to(port) if port is not None else 0,
                cfg.drain_timeout,
            )
        else:
            log.info(
                "reload %d: previous child drained in %.2f s; stopping it",
                attempt.generation,
                attempt.drain_seconds or 0.0,
            )
        await old.stop()

    async def _roll_back(
        self,
        attempt: ReloadAttempt,
        old: ChildSupervisor,
        old_dir: str,
        old_build: str | None,
        new: ChildSupervisor,
    ) -> None:
        attempt.state = "rolled_back"
        attempt.error = f"the new release {new.last_exit or 'failed'} right after the switch"
        self.reloads["ok"] -= 1
        self.reloads["rolled_back"] += 1
        self._retiring.discard(old)
        if old.state is ChildState.RUNNING:
            self.active, self.release_dir, self.build_id = old, old_dir, old_build
            self._forward(old, ChildState.RUNNING)
            log.error("reload %d rolled back: %s", attempt.generation, attempt.error)
        else:  # both are gone: let the old one's supervision restart it
            self.active, self.release_dir, self.build_id = old, old_dir, old_build
            self._forward(old, old.state)
            log.error("reload %d: the new release failed and so did the old", attempt.generation)
        await new.stop()
