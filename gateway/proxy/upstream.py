"""Connections to the Next.js child: a keep-alive pool, and the interface of its supervisor."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from tornado.iostream import IOStream


class Upstream(Protocol):
    """Where the proxy sends requests. Implemented by the child supervisor."""

    def target(self) -> tuple[str, int] | None:
        """``(host, port)`` of the ready child, or None while it is not ready."""

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying while there is no target."""

    def status(self) -> str:
        """One word for the child's state (``starting``, ``backoff``, ``failed``...)."""


@dataclass
class PoolStats:
    opened: int = 0
    """Connections opened since start."""
    reused: int = 0
    """Requests sent on a pooled connection."""
    discarded_stale: int = 0
    """Pooled connections found closed by Next (or expired) instead of being reused."""
    in_use: int = 0
    idle: int = 0


def _closed_by_peer(stream: IOStream) -> bool:
    """True if an idle connection can no longer carry a request.

    An idle HTTP/1.1 connection must have nothing to read: EOF means Next closed it, and any
    byte would be garbage that would corrupt the next response.
    """
    # Bytes Tornado already buffered are as bad as bytes in the socket (private attribute,
    # present in every Tornado 6 release).
    if stream.closed() or getattr(stream, "_read_buffer_size", 0) > 0:
        return True
    try:
        stream.socket.recv(1, socket.MSG_PEEK)  # b"" (EOF) or unexpected bytes: unusable
    except BlockingIOError:
        return False  # nothing to read: the healthy case
    except OSError:
        pass
    return True


class UpstreamPool:
    """Keep-alive connections to the child, reused last-in first-out.

    LIFO keeps the fewest connections warm under uneven load, so the idle ones expire. A pooled
    connection is checked before reuse (:func:`_closed_by_peer`); the rare race where Next closes
    it while our request is in flight is for the caller to retry (only requests that are safe
    to send twice). Idle connections are closed after ``idle_timeout``, which must stay below
    Next's keep-alive timeout so that the gateway, not Next, usually closes them.

    The address is always a loopback IP literal: no resolver (and no resolver thread pool).
    """

    def __init__(self, connect_timeout: float, max_idle: int, idle_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.stats = PoolStats()
        self._idle: dict[tuple[str, int], deque[tuple[IOStream, float]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def acquire(self, target: tuple[str, int]) -> tuple[IOStream, bool]:
        """A connected stream and whether it is a reused one; raises OSError on failure."""
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            stream, since = idle.pop()
            if now - since > self.idle_timeout or _closed_by_peer(stream):
                self.stats.discarded_stale += 1
                stream.close()
                continue
            self.stats.reused += 1
            self.stats.in_use += 1
            stream.set_nodelay(True)  # HTTP1Connection turns it off after each request
            return stream, True
        stream = await self.open(*target)
        self.stats.in_use += 1
        return stream, False

    def release(self, target: tuple[str, int], stream: IOStream, reusable: bool) -> None:
        """Give a stream back after a request; it is kept only if ``reusable`` and healthy."""
        self.stats.in_use -= 1
        idle = self._idle.setdefault(target, deque())
        if not reusable or stream.closed() or len(idle) >= self.max_idle:
            stream.close()
            return
        idle.append((stream, time.monotonic()))
        self._schedule_sweep()

    def clear(self) -> None:
        """Close every idle connection (the child restarted: they all point at a dead port)."""
        for idle in self._idle.values():
            for stream, _ in idle:
                stream.close()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(q) for q in self._idle.values())

    def snapshot(self) -> dict[str, int]:
        self.stats.idle = self.idle_count()
        return dict(self.stats.__dict__)

    async def open(self, host: str, port: int) -> IOStream:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        stream = IOStream(sock)
        try:
            await asyncio.wait_for(stream.connect((host, port)), self.connect_timeout)
        except TimeoutError:
            stream.close()
            raise TimeoutError(f"connect to {host}:{port} timed out") from None
        except Exception as e:
            stream.close()
            real = getattr(e, "real_error", None)
            raise (real if isinstance(real, OSError) else ConnectionError(str(e))) from None
        stream.set_nodelay(True)
        self.stats.opened += 1
        return stream

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(min(self.idle_timeout, 5.0), self._sweep)

    def _sweep(self) -> None:
        """Close expired idle connections and those Next has closed, so fds are not held."""
        self._sweeper = None
        now = time.monotonic()
        for target, idle in list(self._idle.items()):
            keep: deque[tuple[IOStream, float]] = deque()
            for stream, since in idle:
                if now - since <= self.idle_timeout and not _closed_by_peer(stream):
                    keep.append((stream, since))
                else:
                    stream.close()
            if keep:
                self._idle[target] = keep
            else:
                del self._idle[target]
        if self._idle:
            self._schedule_sweep()
