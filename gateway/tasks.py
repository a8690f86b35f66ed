"""Fire-and-forget work, in one place: every task is kept referenced until it ends (asyncio
holds only weak references to running tasks), and a failure is logged once, with what the task
was doing, instead of a "Task exception was never retrieved" at garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("gateway")


class BackgroundTasks:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[asyncio.Task[Any], str] = {}

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` without waiting for it; ``what`` names it in the log if it fails."""
        task = asyncio.ensure_future(coro)
        self._tasks[task] = what or getattr(coro, "__qualname__", "task")
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        what = self._tasks.pop(task, "task")
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %s failed", self.owner, what, exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel what is still running and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
