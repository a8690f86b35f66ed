"""Fire-and-forget tasks: kept until they end, failures logged once with what they did."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.tasks import BackgroundTasks


async def fails() -> None:
    raise RuntimeError("boom")


async def waits() -> None:
    await asyncio.sleep(10)


def test_a_failure_is_logged_with_its_owner_and_task(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> int:
        tasks = BackgroundTasks("the hub")
        tasks.spawn(fails(), "sending a batch")
        await asyncio.sleep(0.01)
        return len(tasks)

    with caplog.at_level(logging.ERROR):
        left = asyncio.run(run())
    assert left == 0
    (record,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.getMessage() == "the hub: sending a batch failed"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


def test_cancel_all_ends_what_runs_without_logging_it(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> int:
        tasks = BackgroundTasks("owner")
        for _ in range(3):
            tasks.spawn(waits())
        await asyncio.sleep(0)
        await tasks.cancel_all()
        return len(tasks)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(run()) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
