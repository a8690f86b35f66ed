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


class SdkSwarm:
    """Many Centrifuge clients in one Node process (tests/node/sdk_swarm.mjs).

    ``pubs[(client, channel)]`` holds the data of every publication a client received, in
    order; ``events[client]`` everything else it reported. Use as a context manager."""

    def __init__(self) -> None:
        node = shutil.which("node")
        assert node, "node is not on PATH"
        self.proc = subprocess.Popen(
            [node, str(NODE_DIR / "sdk_swarm.mjs")],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.pubs: dict[tuple[int, str], list[Any]] = {}
        self.events: dict[int, list[Event]] = {}
        self.noise: list[str] = []  # anything that was not an event (a Node error)
        self._ready = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(10):
            self.close()
            raise AssertionError(f"the SDK swarm did not start: {self.noise}")

    def __enter__(self) -> SdkSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.noise.append(line.rstrip())
                continue
            client = event.pop("c")
            with self._lock:
                if event["event"] == "pub":
                    self.pubs.setdefault((client, event["ch"]), []).append(event["d"])
                elif client is None:
                    self._ready.set()
                else:
                    event["at"] = time.monotonic()
                    self.events.setdefault(client, []).append(event)

    def connect(self, client: int, url: str, token: str, subscribe: list[str]) -> None:
        """Connect client ``client``, with client-side subscriptions to ``subscribe``."""
        self._send(
            {"op": "connect", "id": client, "url": url, "token": token, "subscribe": subscribe}
        )

    def _send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def of(self, client: int, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events.get(client, []) if e["event"] == kind]

    def received(self, client: int, channel: str) -> list[Any]:
        with self._lock:
            return list(self.pubs.get((client, channel), []))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"op": "exit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
