"""Channels, their local subscribers, and fan-out.

Fan-out design (issue 4, measured in bench/fanout.py):

- a publication is encoded **once** per channel, and the same bytes object is queued for every
  subscriber: no per-subscriber encoding and no ``await`` in the publish path;
- each connection has an :class:`Outbox`: messages queued during one event-loop turn leave as
  **one** WebSocket frame (newline-delimited, as the protocol allows), written by a single
  end-of-turn flush for all connections. At saturation this turns N messages for a socket into
  one frame and one ``send()``, which is what lets a Python process keep up with Node's ``ws``;
- an outbox is bounded in bytes; a connection that does not read falls behind, its outbox fills
  and it is disconnected (3008 "slow") instead of growing the gateway's memory.

Nothing here imports Tornado: the outbox writes through a :class:`FrameSink`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class FrameSink(Protocol):
    """The transport side of a connection, as the outbox needs it."""

    def send_frame(self, payload: bytes, on_drained: Callable[[], None]) -> bool:
        """Write ``payload`` as one text frame. True if it was written to the socket at once;
        otherwise ``on_drained`` is called when it has been."""


class Outbox:
    """A connection's outgoing messages; see the module docstring."""

    __slots__ = (
        "_dirty",
        "_hub",
        "_inflight",
        "_queue",
        "_sink",
        "_size",
        "closed",
        "limit",
        "on_overflow",
    )

    def __init__(
        self, hub: Hub, sink: FrameSink, limit: int, on_overflow: Callable[[], None]
    ) -> None:
        self._hub = hub
        self._sink = sink
        self._queue: list[bytes] = []
        self._size = 0
        self._dirty = False
        self._inflight = False
        self.limit = limit
        self.on_overflow = on_overflow
        self.closed = False

    @property
    def queued_bytes(self) -> int:
        return self._size

    def put(self, message: bytes) -> None:
        if self.closed:
            return
        self._queue.append(message)
        self._size += len(message) + 1
        if self._size > self.limit:
            self._hub.overflowed(self)
        elif not self._dirty and not self._inflight:
            self._dirty = True
            self._hub.schedule(self)

    def flush(self) -> None:
        """Write everything queued as one frame (called at the end of the loop turn)."""
        self._dirty = False
        if self._inflight or not self._queue or self.closed:
            return
        queue = self._queue
        payload = queue[0] if len(queue) == 1 else b"\n".join(queue)
        self._queue = []
        self._size = 0
        if not self._sink.send_frame(payload, self._drained):
            self._inflight = True  # the socket is full: queue until it drains

    def _drained(self) -> None:
        self._inflight = False
        if self._queue and not self._dirty and not self.closed:
            self._dirty = True
            self._hub.schedule(self)

    def close(self) -> None:
        self.closed = True
        self._queue = []
        self._size = 0


class Hub:
    """Local subscribers by channel, and the end-of-turn flush of every dirty outbox."""

    def __init__(self) -> None:
        self._live: dict[str, dict[Outbox, None]] = {}
        # Subscribers whose subscription is being set up (recovery in flight): messages for
        # them are buffered with their offsets and merged once their reply is out.
        self._pending: dict[str, dict[Outbox, list[tuple[int, bytes]]]] = {}
        # Subscribers that negotiated fossil deltas, by channel: True once they hold a base
        # (they received a publication live), so the next one may go as a delta.
        self._delta: dict[str, dict[Outbox, bool]] = {}
        self._dirty: list[Outbox] = []
        self._flush_scheduled = False
        self._overflowed: list[Outbox] = []
        self._holds = 0

    # -- subscriptions ------------------------------------------------------------------------

    def add(
        self,
        channel: str,
        outbox: Outbox,
        buffer: list[tuple[int, bytes]] | None = None,
        delta: bool = False,
    ) -> bool:
        """Subscribe ``outbox``; with ``buffer``, messages go there until :meth:`go_live`; with
        ``delta``, publications reach it as :meth:`broadcast_delta` says.
        Returns True if it is the channel's first local subscriber."""
        first = channel not in self._live and channel not in self._pending
        if delta:
            self._delta.setdefault(channel, {})[outbox] = False
        if buffer is None:
            self._live.setdefault(channel, {})[outbox] = None
        else:
            self._pending.setdefault(channel, {})[outbox] = buffer
        return first

    def go_live(self, channel: str, outbox: Outbox) -> None:
        pending = self._pending.get(channel)
        if pending is not None and pending.pop(outbox, None) is not None:
            if not pending:
                del self._pending[channel]
            self._live.setdefault(channel, {})[outbox] = None

    def remove(self, channel: str, outbox: Outbox) -> bool:
        """Unsubscribe; True if the channel has no local subscriber left."""
        for table in (self._live, self._pending, self._delta):
            subs = table.get(channel)
            if subs is not None and outbox in subs:
                del subs[outbox]
                if not subs:
                    del table[channel]
        return channel not in self._live and channel not in self._pending

    def subscriber_count(self, channel: str) -> int:
        return len(self._live.get(channel, ())) + len(self._pending.get(channel, ()))

    def channels(self) -> list[str]:
        return sorted(set(self._live) | set(self._pending))

    # -- fan-out ------------------------------------------------------------------------------

    def broadcast(self, channel: str, message: bytes, offset: int = 0) -> int:
        """Queue one encoded message for every local subscriber of ``channel``."""
        count = 0
        subs = self._live.get(channel)
        if subs:
            for outbox in subs:
                outbox.put(message)
            count = len(subs)
        pending = self._pending.get(channel)
        if pending:
            for buffer in pending.values():
                buffer.append((offset, message))
            count += len(pending)
        return count

    def has_delta(self, channel: str) -> bool:
        """Whether a subscriber of ``channel`` negotiated deltas (then use broadcast_delta)."""
        return channel in self._delta

    def broadcast_delta(
        self, channel: str, plain: bytes, whole: bytes, delta: bytes | None, offset: int = 0
    ) -> int:
        """Fan-out on a channel with delta subscribers: ``plain`` to the others; to a delta
        subscriber ``delta`` (against the previous publication) once it holds that base, else
        ``whole`` (the data as a JSON string). Still three encodings per publication, not one
        per subscriber."""
        based = self._delta.get(channel, {})
        count = 0
        subs = self._live.get(channel)
        if subs:
            for outbox in subs:
                if outbox not in based:
                    outbox.put(plain)
                    continue
                outbox.put(delta if based[outbox] and delta is not None else whole)
                based[outbox] = True
            count = len(subs)
        pending = self._pending.get(channel)
        if pending:
            for outbox, buffer in pending.items():
                buffer.append((offset, whole if outbox in based else plain))
            count += len(pending)
        return count

    def hold(self) -> None:
        """Delay the flush while a batch of events is delivered (a broker draining what it
        read): its messages then leave together, one frame per connection."""
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if self._holds == 0 and (self._dirty or self._overflowed) and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def schedule(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if not self._flush_scheduled and not self._holds:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def overflowed(self, outbox: Outbox) -> None:
        if not outbox.closed:
            outbox.closed = True
            self._overflowed.append(outbox)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._holds:
            return  # release() flushes
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            outbox.flush()
        if self._overflowed:
            overflowed, self._overflowed = self._overflowed, []
            for outbox in overflowed:
                outbox.on_overflow()
