"""The gateway's own endpoints under the reserved ``/_gateway/`` prefix."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.httpbase import GatewayHandler


class ChildView(Protocol):
    """The Next.js child as readiness sees it (the releases, or a worker's view of them)."""

    def snapshot(self) -> dict[str, Any]: ...

    def target(self) -> tuple[str, int] | None: ...

    def retry_after(self) -> int: ...


class JSONHandler(GatewayHandler):
    """Base for the gateway's endpoints: JSON bodies, never cached, errors as JSON too."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(json.dumps({"error": self._reason.lower().replace(" ", "_")}))


class HealthHandler(JSONHandler):
    """Liveness: the gateway process answers. Says nothing about the child (see ready)."""

    def initialize(self, started: float) -> None:
        self.started = started

    def get(self) -> None:
        self.send_json(
            200,
            {
                "status": "ok",
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 3),
            },
        )

    head = get


class ReadyHandler(JSONHandler):
    """Readiness: 200 when the Next.js child answers HTTP, 503 with the reason otherwise."""

    def initialize(
        self,
        supervisor: ChildView,
        details: Callable[[], dict[str, Any]] | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.supervisor = supervisor
        self.details = details
        self.draining = draining

    def get(self) -> None:
        extra = self.details() if self.details is not None else {}
        snapshot = self.supervisor.snapshot()
        if self.draining():  # shutting down: take this instance out of rotation
            self.set_header("Retry-After", "5")
            self.send_json(503, {"status": "draining", "next": snapshot, **extra})
            return
        if self.supervisor.target() is not None:
            self.send_json(200, {"status": "ready", "next": snapshot, **extra})
            return
        self.set_header("Retry-After", str(self.supervisor.retry_after()))
        self.send_json(503, {"status": "not_ready", "next": snapshot, **extra})

    head = get


class ReservedNotFoundHandler(JSONHandler):
    """Anything else under ``/_gateway/`` is the gateway's namespace: never sent to Next."""

    def prepare(self) -> None:
        self.send_json(404, {"error": "not_found", "path": self.request.path})
