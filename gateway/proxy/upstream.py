"""Connections to the Next.js child: an asyncio protocol per connection and a keep-alive pool.

Also the interface the proxy needs from the child's supervisor (:class:`Upstream`).
"""

from __future__ import annotations

import asyncio
import socket
import time
import typing
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream

from gateway.proxy.http11 import ProtocolError, ResponseParser, ResponseSink


class Upstream(Protocol):
    """Where the proxy sends requests. Implemented by the child supervisor."""

    def target(self) -> tuple[str, int] | None:
        """``(host, port)`` of the ready child, or None while it is not ready."""

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying while there is no target."""

    def status(self) -> str:
        """One word for the child's state (``starting``, ``backoff``, ``failed``...)."""


class NoDelayStream(IOStream):
    """An IOStream whose socket keeps TCP_NODELAY on for good.

    Tornado's HTTP1Connection switches Nagle's algorithm on and off around every message: two
    setsockopt calls per response, measured at several percent of the proxy's CPU. The gateway
    writes whole heads and chunks, so it never needs Nagle.
    """

    def set_nodelay(self, value: bool) -> None:
        pass


class ExchangeSink(ResponseSink, Protocol):
    def on_lost(self, error: Exception | None) -> None:
        """The connection failed before the response was complete."""

    def flush(self) -> None:
        """One read of the socket has been parsed: act on what it produced."""


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to the child, carrying one request at a time.

    The exchange calls :meth:`send` (head, then body pieces), and receives the response through
    its sink. Reading pauses while the client is slower than Next (:meth:`pause_reading`), and
    :meth:`drain` waits while Next is slower than an upload.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser: ResponseParser | None = None
        self.sink: ExchangeSink | None = None
        self.keep_alive = False
        self.request_sent = False
        """The whole request (head and body) has been written: until then, a response that
        completes early leaves Next waiting for body bytes, and the connection is not reused."""
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False

    # -- driven by the exchange ---------------------------------------------------------------

    def start(self, sink: ExchangeSink, method: str, head: bytes) -> None:
        """Send a request head; the response will go to ``sink``."""
        assert self.transport is not None and self.parser is None
        self.sink = sink
        self.parser = ResponseParser(self, method)
        self.keep_alive = False
        self.request_sent = False
        self.transport.write(head)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self._write_paused and not self.closed:
            loop = asyncio.get_running_loop()
            self._drained = loop.create_future()
            await self._drained

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    @property
    def write_paused(self) -> bool:
        """Next is not taking request bytes as fast as they come (see :meth:`drain`)."""
        return self._write_paused and not self.closed

    @property
    def response_started(self) -> bool:
        return self.parser is not None and self.parser.started

    @property
    def reusable(self) -> bool:
        """True after a complete request and a complete response on a connection both sides
        keep open. Anything less (Next answered before the body was all sent, framing in any
        doubt) and the connection is closed: nginx's upstream keepalive has the same rule."""
        return (
            not self.closed
            and self.keep_alive
            and self.request_sent
            and self.parser is not None
            and self.parser.complete
        )

    def recycle(self) -> None:
        """Forget the finished exchange; the connection goes back to the pool, reading (so that
        a close by Next is noticed while it waits there)."""
        self.parser = None
        self.sink = None
        self.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- ResponseSink: the parser reports here; forwarded to the exchange ---------------------

    def on_head(self, code: int, reason: str, headers: HTTPHeaders, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        if self.sink is not None:
            self.sink.on_head(code, reason, headers, keep_alive)

    def on_body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(data)

    def on_end(self) -> None:
        if self.sink is not None:
            self.sink.on_end()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or parser.complete:
            self.abort()  # bytes nobody asked for: this connection can no longer be trusted
            return
        sink = self.sink
        try:
            extra = parser.feed(data)
        except ProtocolError as e:
            self._fail(e)
            return
        if extra:
            self.keep_alive = False
            self.abort()
        if sink is not None:
            sink.flush()

    def eof_received(self) -> bool:
        self.closed = True
        parser, sink = self.parser, self.sink
        if parser is not None and not parser.complete:
            try:
                parser.eof()
            except ProtocolError as e:
                self._fail(e)
                return False
            if sink is not None:
                sink.flush()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        parser = self.parser
        if parser is not None and not parser.complete:
            self._fail(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _fail(self, error: Exception | None) -> None:
        sink, self.sink = self.sink, None
        self.abort()
        if sink is not None:
            sink.on_lost(error)


class PoolBusy(Exception):
    """Every upstream connection the pool may have is in use, and none came free in time."""


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
    waiting: int = 0
    """Requests waiting for a connection (``max_connections`` reached)."""
    refused_busy: int = 0
    """Requests refused because no connection came free within ``queue_timeout``."""


class UpstreamPool:
    """Keep-alive connections to the child, reused last-in first-out.

    LIFO keeps the fewest connections warm under uneven load, so the idle ones expire. The event
    loop reads every idle connection, so one that Next closes is marked closed at once and never
    handed out; the rare race where Next closes it while a request is in flight is for the
    caller to retry (only requests that are safe to send twice). Idle connections are closed
    after ``idle_timeout``, which must stay below Next's keep-alive timeout so that the gateway,
    not Next, usually closes them.

    The address is always a loopback IP literal: no resolver (and no resolver thread pool).
    """

    def __init__(
        self,
        connect_timeout: float,
        max_idle: int,
        idle_timeout: float,
        max_connections: int = 0,
        queue_timeout: float = 10.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        """Connections in use at once (0: no limit); more requests wait, first come first
        served, up to ``queue_timeout`` seconds, then :class:`PoolBusy`."""
        self.queue_timeout = queue_timeout
        self.stats = PoolStats()
        self._idle: dict[tuple[str, int], deque[tuple[UpstreamConnection, float]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._active: tuple[str, int] | None = None  # set by a reload's switch

    async def _take_slot(self) -> None:
        """Count one more connection in use, waiting for a free one at the limit."""
        if not self.max_connections or (
            self.stats.in_use < self.max_connections and not self._waiters
        ):
            self.stats.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.stats.waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout)
        except TimeoutError:
            if waiter.done():  # handed a slot at the last moment: give it to the next one
                self._free_slot()
            waiter.cancel()
            self.stats.refused_busy += 1
            raise PoolBusy(f"{self.max_connections} upstream connections in use") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()
            waiter.cancel()
            raise
        finally:
            self.stats.waiting -= 1
            if waiter in self._waiters:  # timed out or cancelled: no longer in the queue
                self._waiters.remove(waiter)
        # A slot was handed over by _free_slot: in_use already counts it.

    def _free_slot(self) -> None:
        """One connection is no longer in use: hand its slot to the first waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.stats.in_use -= 1

    async def acquire(self, target: tuple[str, int]) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it is a reused one; raises OSError on failure, or
        :class:`PoolBusy` at the connection limit."""
        await self._take_slot()
        try:
            return self._pop_idle(target) or (await self.open(*target), False)
        except BaseException:
            self._free_slot()
            raise

    def _pop_idle(self, target: tuple[str, int]) -> tuple[UpstreamConnection, bool] | None:
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            conn, since = idle.pop()
            if conn.closed or now - since > self.idle_timeout:
                self.stats.discarded_stale += 1
                conn.abort()
                continue
            self.stats.reused += 1
            return conn, True
        return None

    async def acquire_new(self, target: tuple[str, int]) -> UpstreamConnection:
        """A fresh connection, never a pooled one (for a retry)."""
        await self._take_slot()
        try:
            return await self.open(*target)
        except BaseException:
            self._free_slot()
            raise

    def release(self, target: tuple[str, int], conn: UpstreamConnection) -> None:
        """Give a connection back; it is kept only if it can carry another request."""
        self._free_slot()
        retired = self._active is not None and target != self._active
        idle = self._idle.get(target)
        if idle is None:  # not setdefault: that builds a deque per request to throw away
            idle = self._idle[target] = deque()
        if not conn.reusable or len(idle) >= self.max_idle or retired:
            # A connection to a child a reload switched away from goes no further: kept, it
            # would hold that child (which drains until the gateway has no connection to it).
            conn.abort()
            return
        conn.recycle()
        idle.append((conn, time.monotonic()))
        self._schedule_sweep()

    def close_idle_except(self, target: tuple[str, int]) -> None:
        """Close idle connections to every other child (a reload switched to ``target``): the
        previous child then drains as soon as its requests in flight are done: those still
        running close their connection when they end instead of returning it."""
        self._active = target
        for other in [t for t in self._idle if t != target]:
            for conn, _ in self._idle.pop(other):
                conn.abort()

    def clear(self) -> None:
        """Close every idle connection (the child restarted: they all point at a dead port)."""
        for idle in self._idle.values():
            for conn, _ in idle:
                conn.abort()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(q) for q in self._idle.values())

    def snapshot(self) -> dict[str, int]:
        self.stats.idle = self.idle_count()
        return dict(self.stats.__dict__)

    async def open(self, host: str, port: int) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(UpstreamConnection, host, port), self.connect_timeout
            )
        except TimeoutError:
            raise TimeoutError(f"connect to {host}:{port} timed out") from None
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.opened += 1
        return conn

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(min(self.idle_timeout, 5.0), self._sweep)

    def _sweep(self) -> None:
        """Close expired idle connections and those Next has closed, so fds are not held."""
        self._sweeper = None
        now = time.monotonic()
        for target, idle in list(self._idle.items()):
            keep: deque[tuple[UpstreamConnection, float]] = deque()
            for conn, since in idle:
                if conn.closed or now - since > self.idle_timeout:
                    conn.abort()
                else:
                    keep.append((conn, since))
            if keep:
                self._idle[target] = keep
            else:
                del self._idle[target]
        if self._idle:
            self._schedule_sweep()
