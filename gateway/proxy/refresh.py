"""A request to Next.js that no client waits for: the micro-cache's background refresh of a
stale entry (microcache.py). One GET, its response read whole (bounded), over the same pool
and with the same connection rules as the proxy's requests.
"""

from __future__ import annotations

import asyncio
import logging

from tornado.httputil import HTTPHeaders

from gateway.proxy.headers import strip_hop_by_hop
from gateway.proxy.upstream import PoolBusy, UpstreamConnection, UpstreamPool

log = logging.getLogger("gateway.proxy")


class _WholeResponse:
    """The sink of one response, kept whole up to ``limit`` body bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.headers = HTTPHeaders()
        self.pieces: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_head(self, code: int, reason: str, headers: HTTPHeaders, keep_alive: bool) -> None:
        self.status, self.headers = code, headers

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self._settle(False)  # too large to keep: the connection is dropped
            return
        self.pieces.append(data)

    def on_end(self) -> None:
        self._settle(True)

    def on_lost(self, error: Exception | None) -> None:
        self._settle(False)

    def flush(self) -> None:
        pass

    def _settle(self, complete: bool) -> None:
        if not self.done.done():
            self.done.set_result(complete)


async def fetch_whole(
    pool: UpstreamPool,
    target: tuple[str, int],
    head: bytes,
    limit: int,
    timeout: float,
) -> tuple[int, HTTPHeaders, bytes] | None:
    """Send a GET request ``head`` (no body) to ``target`` and read the whole response, at most
    ``limit`` body bytes, within ``timeout`` seconds. None when that fails: Next unreachable,
    the pool at its limit, the response cut, too large or too slow (the connection is then
    closed, never reused)."""
    try:
        conn, _ = await pool.acquire(target)
    except (PoolBusy, OSError) as e:
        log.debug("background refresh: no connection to Next: %r", e)
        return None
    sink = _WholeResponse(limit)
    complete = False
    try:
        conn.start(sink, "GET", head)
        conn.request_sent = True
        complete = await asyncio.wait_for(asyncio.shield(sink.done), timeout)
    except TimeoutError:
        log.info("background refresh: no complete response in %g s", timeout)
    finally:
        _release(pool, target, conn, complete)
    if not complete:
        return None
    strip_hop_by_hop(sink.headers)
    return sink.status, sink.headers, b"".join(sink.pieces)


def _release(
    pool: UpstreamPool, target: tuple[str, int], conn: UpstreamConnection, complete: bool
) -> None:
    if not complete:
        conn.abort()
    pool.release(target, conn)
