"""The real centrifuge SDK, in Node, driven from Python (tests/node/sdk_client.mjs)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parents[1] / "node"

Event = dict[str, Any]


class SdkClient:
    """One Centrifuge client. ``events`` holds everything it reported, in order."""

    def __init__(self, name: str = "sdk") -> None:
        node = shutil.which("node")
        assert node, "node is not on PATH"
        self.name = name
        self.proc = subprocess.Popen(
            [node, str(NODE_DIR / "sdk_client.mjs")],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.events: list[Event] = []
        self._new: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready", 10)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "stderr", "line": line.rstrip()}
            with self._lock:
                self.events.append(event)
            self._new.put(event)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def wait(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0, start: int = 0
    ) -> Event:
        """The first event (from index ``start``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no matching event in {timeout} s; got {self.events[-15:]}"
                )
            try:
                self._new.get(timeout=0.05)
            except queue.Empty:
                pass

    def call(self, op: str, timeout: float = 10.0, **params: Any) -> Event:
        mark = len(self.events)
        self.send(op=op, **params)
        return self.wait(lambda e: e["event"] == "result" and e["op"] == op, timeout, mark)

    def of(self, kind: str, **match: Any) -> list[Event]:
        with self._lock:
            return [
                e
                for e in self.events
                if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
            ]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
