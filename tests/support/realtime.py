"""Driving the realtime session without sockets: a fake transport and a ready-made node."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from gateway.config import NamespaceConfig, RealtimeConfig
from gateway.realtime.auth import TokenVerifier, VerifierSettings
from gateway.realtime.client import ClientSession
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.node import Node

SECRET = "test-secret-that-is-long-enough-for-hs256!"


def token(
    sub: str = "alice",
    ttl: float | None = 60,
    secret: str = SECRET,
    alg: str = "HS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": sub, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return jwt.encode(payload, secret, algorithm=alg)


def make_node(hooks: Any = None, **realtime: Any) -> Node:
    """A node over the memory engine; ``realtime`` sets RealtimeConfig fields (``hook_paths``:
    HooksConfig fields), ``hooks`` answers the proxy hooks."""
    namespaces = realtime.pop("namespaces", None)
    allow_anonymous = realtime.pop("allow_anonymous", False)
    hook_paths = realtime.pop("hook_paths", {})
    cfg = RealtimeConfig(**realtime)
    cfg.namespaces = (
        namespaces
        if namespaces is not None
        else {
            "chat": NamespaceConfig(
                presence=True,
                join_leave=True,
                history_size=10,
                history_ttl=300,
                force_recovery=True,
                allow_publish=True,
                allow_presence=True,
                allow_history=True,
            ),
            "private": NamespaceConfig(private=True),
            "closed": NamespaceConfig(allow_subscribe=False),
        }
    )
    for key, value in hook_paths.items():
        setattr(cfg.hooks, key, value)
    verifier = TokenVerifier(VerifierSettings(secret=SECRET))
    return Node(cfg, verifier, MemoryBroker(), MemoryPresence(), allow_anonymous, hooks)


class FakeTransport:
    """Collects what the session writes; can pretend the socket is full."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.full = False
        self.drain_callbacks: list[Callable[[], None]] = []

    remote = "test"
    name = "websocket"
    emulation = False
    unidirectional = False

    def send_frame(self, payload: bytes, on_drained: Callable[[], None]) -> bool:
        self.frames.append(payload)
        if self.full:
            self.drain_callbacks.append(on_drained)
            return False
        return True

    def close_with(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON message written so far, frames split on newlines."""
        return [json.loads(line) for frame in self.frames for line in frame.split(b"\n")]

    def take(self) -> list[dict[str, Any]]:
        out = self.messages()
        self.frames.clear()
        return out


class Conn:
    """A session plus its transport, with helpers to send commands and read replies."""

    def __init__(self, node: Node) -> None:
        self.transport = FakeTransport()
        self.session = ClientSession(node.session_context, self.transport)
        self._id = 0

    async def send(self, *commands: dict[str, Any]) -> list[int]:
        ids = []
        lines = []
        for command in commands:
            if "id" not in command and command:
                self._id += 1
                command = {"id": self._id, **command}
            ids.append(command.get("id", 0))
            lines.append(json.dumps(command))
        await self.session.handle_frame("\n".join(lines))
        return ids

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One command; flush; return its reply."""
        (cid,) = await self.send({method: params or {}})
        await flush()
        messages = self.transport.take()
        found = [m for m in messages if m.get("id") == cid]
        rest = [m for m in messages if m.get("id") != cid]
        if rest:  # everything else stays for the test to read
            self.transport.frames.append(b"\n".join(json.dumps(m).encode() for m in rest))
        if not found:
            raise AssertionError(f"no reply to {method}")
        return found[0]

    async def connect(self, tok: str | None = None, **params: Any) -> dict[str, Any]:
        return await self.call("connect", {"token": tok if tok is not None else token(), **params})


async def flush() -> None:
    """Let the end-of-turn flush run."""
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)
