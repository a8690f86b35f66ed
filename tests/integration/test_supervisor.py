"""The child supervisor against a real stand-in process (a small Python HTTP server)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.procs import ROOT, group_members, pid_alive, standin_command

from gateway.supervisor import ChildSpec, ChildState, ChildSupervisor


def make_spec(*flags: str, **overrides: Any) -> ChildSpec:
    template = standin_command(*flags)
    values: dict[str, Any] = {
        "name": "standin",
        "argv": lambda port: [a.replace("{port}", str(port)) for a in template],
        "cwd": str(ROOT),
        "env": dict(os.environ),
        "start_timeout": 10.0,
        "stop_grace": 5.0,
        "backoff_initial": 0.2,
        "backoff_max": 10.0,
        "max_failures": 10,
        "stable_after": 60.0,
    }
    values.update(overrides)
    return ChildSpec(**values)


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def grandchild_pid(caplog: pytest.LogCaptureFixture) -> int:
    for record in caplog.records:
        m = re.match(r"grandchild pid (\d+)", record.getMessage())
        if m:
            return int(m[1])
    raise AssertionError("the stand-in did not report its grandchild")


@pytest.mark.gen_test(timeout=30)
async def test_restarts_after_kill9_with_growing_backoff(caplog: pytest.LogCaptureFixture) -> None:
    sup = ChildSupervisor(make_spec())
    sup.start()
    try:
        assert await sup.wait_ready(10)
        # Every transition, as it happens: a backoff can last a few ms (full jitter), too short
        # to be caught by polling.
        seen: list[tuple[ChildState, bool]] = []
        sup.add_listener(lambda state: seen.append((state, sup.target() is None)))
        ceilings = []
        for _ in range(3):
            old = sup.pid
            assert old is not None
            seen.clear()
            os.kill(old, signal.SIGKILL)
            await until(
                lambda old=old: sup.state is ChildState.RUNNING and sup.pid != old, 10, "restart"
            )
            backoffs = [entry for entry in seen if entry[0] is ChildState.BACKOFF]
            assert len(backoffs) == 1, seen
            assert backoffs[0][1]  # no request goes to a dead child meanwhile
            ceilings.append(sup.backoff_ceiling)  # of the backoff just waited
        assert ceilings == [0.2, 0.4, 0.8]
        assert sup.restarts == 3
        assert sup.snapshot()["last_exit"] == "was killed by SIGKILL"
        assert "restarting in" in caplog.text
    finally:
        await sup.stop()


@pytest.mark.gen_test(timeout=30)
async def test_crash_loop_limit_gives_up_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    sup = ChildSupervisor(
        make_spec("--exit-after", "0.2", "--exit-code", "3", backoff_initial=0.05, max_failures=3)
    )
    sup.start()
    try:
        await until(lambda: sup.state is ChildState.FAILED, 20, "the crash-loop limit")
        snap = sup.snapshot()
        assert snap["consecutive_failures"] == 3
        assert snap["restarts"] == 2
        assert "failed 3 times in a row (last: exited with status 3); giving up" in snap["reason"]
        assert sup.target() is None and sup.retry_after() == 30
        assert "giving up" in caplog.text
        await asyncio.sleep(0.5)
        assert sup.restarts == 2  # really stopped restarting
    finally:
        await sup.stop()


@pytest.mark.gen_test(timeout=30)
async def test_child_that_never_answers_hits_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    sup = ChildSupervisor(make_spec("--never-ready", start_timeout=1.0, max_failures=1))
    sup.start()
    try:
        started = time.monotonic()
        assert not await sup.wait_ready(10)
        assert 1.0 <= time.monotonic() - started < 5
        assert sup.state is ChildState.FAILED
        assert re.search(r"did not answer HTTP on 127\.0\.0\.1:\d+/ within 1 s", caplog.text)
        assert "did not become ready within 1 s" in sup.snapshot()["reason"]
        assert sup.pid is None
    finally:
        await sup.stop()


@pytest.mark.gen_test(timeout=30)
async def test_stop_ends_the_whole_process_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sup = ChildSupervisor(make_spec("--grandchild"))
    sup.start()
    assert await sup.wait_ready(10)
    pgid = sup.pid
    assert pgid is not None
    grandchild = grandchild_pid(caplog)
    assert set(group_members(pgid)) == {pgid, grandchild}
    await sup.stop()
    assert sup.state is ChildState.STOPPED
    assert group_members(pgid) == []
    assert not pid_alive(grandchild)


@pytest.mark.gen_test(timeout=30)
async def test_stop_escalates_to_sigkill_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    sup = ChildSupervisor(make_spec("--ignore-sigterm", stop_grace=0.5))
    sup.start()
    assert await sup.wait_ready(10)
    pgid = sup.pid
    assert pgid is not None
    started = time.monotonic()
    await sup.stop()
    assert 0.5 <= time.monotonic() - started < 3
    assert "did not exit 0.5 s after SIGTERM; sending SIGKILL" in caplog.text
    assert group_members(pgid) == []


@pytest.mark.gen_test(timeout=30)
async def test_kill9_of_the_child_also_ends_what_it_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sup = ChildSupervisor(make_spec("--grandchild", backoff_initial=5.0))
    sup.start()
    try:
        assert await sup.wait_ready(10)
        pgid = sup.pid
        assert pgid is not None
        grandchild = grandchild_pid(caplog)
        os.kill(pgid, signal.SIGKILL)
        await until(lambda: sup.pid != pgid, 5, "the supervisor to see the exit")
        await until(lambda: not pid_alive(grandchild), 2, "the grandchild to be killed")
        assert group_members(pgid) == []
    finally:
        await sup.stop()


@pytest.mark.gen_test(timeout=30)
async def test_child_output_goes_to_the_log_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sup = ChildSupervisor(make_spec())
    sup.start()
    try:
        assert await sup.wait_ready(10)
        await until(lambda: "stderr" in caplog.text, 5, "the stderr line")
        by_message = {r.getMessage(): r for r in caplog.records if r.name == "child.standin"}
        out = next(r for m, r in by_message.items() if m.startswith("standin pid"))
        err = by_message["standin says something on stderr"]
        assert (out.levelno, err.levelno) == (logging.INFO, logging.WARNING)
    finally:
        await sup.stop()


@pytest.mark.gen_test(timeout=30)
async def test_stop_during_backoff_returns_at_once() -> None:
    sup = ChildSupervisor(make_spec("--exit-after", "0", backoff_initial=30.0, backoff_max=30.0))
    sup.backoff.rng.seed(1)  # first delay: uniform(0, 30) with this seed is ~4 s
    sup.start()
    await until(lambda: sup.state is ChildState.BACKOFF and sup.restart_at, 10, "backoff")
    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started < 1
    assert sup.state is ChildState.STOPPED


@pytest.mark.gen_test(timeout=30)
async def test_a_command_that_cannot_run_counts_as_a_failure() -> None:
    spec = make_spec(max_failures=2, backoff_initial=0.01)
    spec.argv = lambda port: ["/nonexistent/next-server", str(port)]
    sup = ChildSupervisor(spec)
    sup.start()
    try:
        await until(lambda: sup.state is ChildState.FAILED, 10, "failure")
        assert "could not be started" in sup.snapshot()["reason"]
    finally:
        await sup.stop()
