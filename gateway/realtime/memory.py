"""The in-memory engine: Broker, history and presence for one process.

Limits: one process only (publications do not reach other processes or hosts: use the Redis
engine for that); history and presence are lost when the process stops, so every channel gets a
new epoch after a restart and clients that recover from the old epoch get ``recovered: false``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.realtime.broker import (
    BrokerEventHandler,
    HistoryOptions,
    StreamPosition,
    Unrecoverable,
)
from gateway.realtime.protocol import ClientInfo, Publication

IDEMPOTENCY_TTL = 300.0


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


@dataclass
class _Stream:
    epoch: str
    size: int
    ttl: float
    offset: int = 0
    expires_at: float = 0.0
    publications: deque[Publication] = field(default_factory=deque)

    def first_offset(self) -> int:
        return self.publications[0].offset if self.publications else self.offset + 1


class MemoryBroker:
    """Broker with history in this process's memory (see the module docstring for limits)."""

    def __init__(self) -> None:
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[str, _Stream] = {}
        self._idempotent: dict[tuple[str, str], tuple[float, StreamPosition | None]] = {}
        self._now = time.monotonic

    def run(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def ready(self, timeout: float) -> bool:
        return True

    def snapshot(self) -> dict[str, Any]:
        return {"kind": "memory", "state": "up"}

    async def subscribe(self, channel: str) -> None:
        pass  # every publication of this process is already delivered to the handler

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def control(self, node: str, message: bytes) -> bool:
        handler = self._handler
        if handler is None or node != handler.node_id:
            return False  # one process: there is no other to reach
        asyncio.get_running_loop().call_soon(handler.handle_control, message)
        return True

    async def control_all(self, message: bytes) -> int:
        handler = self._handler
        if handler is None:
            return 0
        asyncio.get_running_loop().call_soon(handler.handle_control, message)
        return 1  # one process: this one

    async def publish(
        self,
        channel: str,
        pub: Publication,
        history: HistoryOptions | None,
        idempotency_key: str | None = None,
    ) -> StreamPosition | None:
        now = self._now()
        if idempotency_key is not None:
            seen = self._idempotent.get((channel, idempotency_key))
            if seen is not None and seen[0] > now:
                return seen[1]
            if len(self._idempotent) > 100_000:
                self.sweep()
        position = None
        if history is not None and history.size > 0 and history.ttl > 0:
            stream = self._stream(channel, history, now)
            stream.offset += 1
            pub.offset = stream.offset
            pub.epoch = stream.epoch
            stream.publications.append(pub)
            while len(stream.publications) > stream.size:
                stream.publications.popleft()
            stream.expires_at = now + stream.ttl
            position = StreamPosition(stream.offset, stream.epoch)
        if idempotency_key is not None:
            self._idempotent[(channel, idempotency_key)] = (now + IDEMPOTENCY_TTL, position)
        if self._handler is not None:
            self._handler.handle_publication(channel, pub)
        return position

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_leave(channel, info)

    async def history(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool = False,
    ) -> tuple[list[Publication], StreamPosition]:
        stream = self._live_stream(channel)
        if stream is None:
            stream = self._streams.setdefault(channel, _Stream(new_epoch(), 0, 0.0))
        position = StreamPosition(stream.offset, stream.epoch)
        pubs = list(stream.publications)
        if since is not None:
            if since.epoch != stream.epoch or since.offset > stream.offset:
                raise Unrecoverable(channel)
            if since.offset + 1 < stream.first_offset():
                raise Unrecoverable(channel)  # some publications after `since` were evicted
            pubs = [p for p in pubs if p.offset > since.offset]
        if reverse:
            pubs.reverse()
        if limit >= 0:
            pubs = pubs[:limit]
        return pubs, position

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.publications.clear()

    async def close(self) -> None:
        self._streams.clear()

    def _stream(self, channel: str, history: HistoryOptions, now: float) -> _Stream:
        stream = self._live_stream(channel, now)
        if stream is None:
            # A stream past its TTL is gone, its position with it: a new epoch tells
            # recovering clients that what they missed cannot be known.
            stream = _Stream(new_epoch(), history.size, history.ttl)
            self._streams[channel] = stream
        stream.size, stream.ttl = history.size, history.ttl
        return stream

    def _live_stream(self, channel: str, now: float | None = None) -> _Stream | None:
        stream = self._streams.get(channel)
        if stream is None:
            return None
        if stream.expires_at and (now if now is not None else self._now()) > stream.expires_at:
            del self._streams[channel]
            return None
        return stream

    def sweep(self) -> None:
        """Drop expired streams (called periodically so memory does not grow with idle
        channels)."""
        now = self._now()
        for channel in [c for c, s in self._streams.items() if s.expires_at and now > s.expires_at]:
            del self._streams[channel]
        for key in [k for k, (t, _) in self._idempotent.items() if t < now]:
            del self._idempotent[key]


class MemoryPresence:
    """Presence in this process's memory (one process only)."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, ClientInfo]] = {}

    async def add(self, channel: str, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[info.client] = info

    async def remove(self, channel: str, client_id: str) -> None:
        members = self._channels.get(channel)
        if members is not None:
            members.pop(client_id, None)
            if not members:
                del self._channels[channel]

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def stats(self, channel: str) -> tuple[int, int]:
        members = self._channels.get(channel, {})
        return len(members), len({i.user for i in members.values()})
