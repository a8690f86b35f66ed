"""The reverse-proxy request handler: every path the gateway does not own goes to Next.js.

Bodies stream in both directions. A request body is written upstream chunk by chunk as Tornado
reads it (``stream_request_body``), each write waiting for the upstream socket; a response body
is written to the client chunk by chunk and each write waits for the client's socket to drain
(``await flush()``), which stops reading from Next until it does: a slow client slows Next
instead of filling the gateway's memory.

Connections to Next come from a keep-alive pool. A request that fails on a reused connection
before any byte of response arrived (Next closed it at the same moment) is sent again once on a
new connection, if it is safe to send twice: an idempotent method without a body.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.web import RequestHandler, stream_request_body

from gateway.proxy.headers import ForwardingPolicy, end_to_end, local_port
from gateway.proxy.static import CACHE_CONTROL, PREFIX, Asset, StaticAssets, choose, etag_matches
from gateway.proxy.upstream import Upstream, UpstreamPool

log = logging.getLogger("gateway.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 §9.2.2
_UNLIMITED = 2**62


@dataclass
class ProxySettings:
    """Everything a proxied request needs, shared by all requests."""

    upstream: Upstream
    pool: UpstreamPool
    forwarding: ForwardingPolicy
    static: StaticAssets | None
    max_body_size: int
    first_byte_timeout: float
    idle_timeout: float

    def __post_init__(self) -> None:
        self.connection_params = HTTP1ConnectionParameters(
            decompress=False,  # compressed bytes pass through, Content-Encoding kept
            max_header_size=256 * 1024,
            max_body_size=_UNLIMITED,  # a response streams through; its size is not ours to cap
        )


def error_page(
    status: int, title: str, detail: str, retry_after: int | None, accept: str
) -> tuple[str, bytes]:
    """A small body for the gateway's own error responses: HTML for browsers, JSON otherwise."""
    if "text/html" in accept:
        refresh = f'<meta http-equiv="refresh" content="{retry_after}">' if retry_after else ""
        body = (
            f"<!doctype html><html><head><meta charset=utf-8>{refresh}<title>{status} "
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(detail)}</p></body></html>"
        )
        return "text/html; charset=utf-8", body.encode()
    payload: dict[str, Any] = {"error": title.lower().replace(" ", "_"), "detail": detail}
    if retry_after is not None:
        payload["retry_after"] = retry_after
    return "application/json", json.dumps(payload).encode()


class _ResponseRelay(httputil.HTTPMessageDelegate):
    """Receives Next's response and replays it on the client's connection."""

    def __init__(self, handler: ProxyHandler) -> None:
        self.handler = handler
        self.headers_seen = False
        self.complete = False
        self.keep_alive = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        assert isinstance(start_line, httputil.ResponseStartLine)
        if start_line.code < 200:  # 100 Continue / 103 Early Hints: not relayed
            return None
        self.headers_seen = True
        connection = {
            t.strip().lower() for v in headers.get_list("Connection") for t in v.split(",")
        }
        framed = (
            "Content-Length" in headers
            or "chunked" in headers.get("Transfer-Encoding", "").lower()
            or start_line.code in (204, 304)
            or self.handler.request.method == "HEAD"
        )
        self.keep_alive = start_line.version == "HTTP/1.1" and "close" not in connection and framed
        return self.handler.start_response(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.handler.relay_chunk(chunk)

    def finish(self) -> None:
        self.complete = True

    def on_connection_close(self) -> None:
        pass


@stream_request_body
class ProxyHandler(RequestHandler):
    """Relays one request to the child and its response back, streaming both bodies."""

    def initialize(self, settings: ProxySettings) -> None:
        self.s = settings
        self._target: tuple[str, int] | None = None
        self._stream: IOStream | None = None
        self._conn: HTTP1Connection | None = None
        self._reused = False
        self._has_body = False
        self._body_bytes = 0
        self._upstream_failed = False
        self._client_gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out: str | None = None

    # Tornado would add an ETag of its own and answer 304 on its own: the proxy must not.
    def compute_etag(self) -> str | None:
        return None

    # -- request ------------------------------------------------------------------------------

    async def prepare(self) -> None:
        request = self.request
        method = request.method or "GET"
        # The body limit is enforced in data_received, with a 413 instead of Tornado's 400;
        # an early answer (413, 503...) then makes Tornado close the connection after it.
        request.connection.set_max_body_size(_UNLIMITED)  # type: ignore[union-attr]
        if (
            self.s.static is not None
            and request.path.startswith(PREFIX)
            and method in ("GET", "HEAD")
        ):
            if self._serve_static(self.s.static):
                return
        declared = request.headers.get("Content-Length")
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if declared is not None and declared.isdigit() and int(declared) > self.s.max_body_size:
            await self._refuse_body(413, "Payload Too Large", self._too_large_detail())
            return
        self._has_body = chunked or (declared is not None and declared != "0")
        if chunked and method not in ("POST", "PUT", "PATCH"):
            # Tornado's client frames a body of unknown length only for these methods.
            await self._refuse_body(411, "Length Required", "send a Content-Length header")
            return
        self._target = self.s.upstream.target()
        if self._target is None:
            self.send_unavailable()
            return
        if self._has_body:  # open now: the body is streamed upstream as it arrives
            await self._open_upstream(allow_reuse=True)

    async def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # already answered (413, 502...): the rest of the body is discarded
        self._body_bytes += len(chunk)
        if self._body_bytes > self.s.max_body_size:
            self._discard_upstream()
            await self._refuse_body(413, "Payload Too Large", self._too_large_detail())
            return
        if self._conn is None or self._upstream_failed:
            return
        try:
            await self._conn.write(chunk)
        except StreamClosedError:
            self._upstream_failed = True  # answered with 502 once the body is read

    async def relay(self) -> None:
        """Send the request (or its end) and relay the response; retry once when safe."""
        for attempt in (1, 2):
            if self._finished or self._client_gone:
                return
            if self._conn is None and not await self._open_upstream(allow_reuse=attempt == 1):
                return
            reused = self._reused
            relay = _ResponseRelay(self)
            await self._exchange(relay)
            if relay.complete and not self._client_gone:
                self._release(relay.keep_alive)
                self.finish()
                return
            self._discard_upstream()
            if self._client_left():
                return
            if relay.headers_seen:
                # Head (and part of the body) are out: the only honest signal left is to cut
                # the connection, so the client sees a truncated message, never a complete one.
                log.warning(
                    "upstream %s mid-response: %s %s",
                    "timed out" if self._timed_out else "closed",
                    self.request.method,
                    self.request.uri,
                )
                self._abort_client()
                return
            if attempt == 1 and reused and not self._timed_out and self._replayable():
                log.debug("pooled connection was closed by Next; retrying %s", self.request.uri)
                continue
            if self._timed_out:
                self._send_error(
                    504, "Gateway Timeout", "The application server did not respond in time.", None
                )
            else:
                await self._upstream_unreachable("closed the connection before responding")
            return

    get = post = put = patch = delete = options = head = relay

    async def _exchange(self, relay: _ResponseRelay) -> None:
        assert self._conn is not None
        try:
            if self._upstream_failed:
                raise StreamClosedError()
            self._conn.finish()
            self._arm(self.s.first_byte_timeout, "first byte")
            await self._conn.read_response(relay)
        except (StreamClosedError, httputil.HTTPInputError, httputil.HTTPOutputError) as e:
            log.debug("upstream error for %s %s: %r", self.request.method, self.request.uri, e)
        finally:
            self._disarm()

    def _client_left(self) -> bool:  # a method: the flag changes while we await
        return self._client_gone

    def _replayable(self) -> bool:
        return self.request.method in _IDEMPOTENT and not self._has_body

    # -- upstream connection ------------------------------------------------------------------

    async def _open_upstream(self, allow_reuse: bool) -> bool:
        """Connect (or reuse) and send the request head; on failure answer 502/503."""
        target = self._target
        assert target is not None
        try:
            if allow_reuse:
                stream, self._reused = await self.s.pool.acquire(target)
            else:
                stream, self._reused = await self.s.pool.open(*target), False
                self.s.pool.stats.in_use += 1
        except OSError as e:
            await self._upstream_unreachable(str(e))
            return False
        self._stream = stream
        self._conn = HTTP1Connection(stream, True, self.s.connection_params)
        start_line = httputil.RequestStartLine(
            self.request.method or "GET", self.request.uri or "/", "HTTP/1.1"
        )
        try:
            await self._conn.write_headers(start_line, self._upstream_headers())
        except StreamClosedError:
            self._upstream_failed = True  # the retry logic in relay() decides
        return True

    def _upstream_headers(self) -> httputil.HTTPHeaders:
        req = self.request
        return self.s.forwarding.upstream_headers(
            req.headers, req.remote_ip or "", req.protocol, req.host, local_port(req)
        )

    def _release(self, reusable: bool) -> None:
        if self._stream is not None and self._target is not None:
            self.s.pool.release(self._target, self._stream, reusable)
        self._stream = None
        self._conn = None

    def _discard_upstream(self) -> None:
        self._release(False)

    # -- watchdog: first-byte and idle timeouts -----------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, what: str) -> None:
        self._timer = None
        self._timed_out = what
        if self._stream is not None:
            self._stream.close()  # the pending read fails; relay() answers 504 or cuts

    # -- response relay -----------------------------------------------------------------------

    async def start_response(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        self._disarm()
        self.set_status(start_line.code, start_line.reason or None)
        # Tornado pre-sets Content-Type, Server and Date: the response must be Next's alone.
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)
        for name, value in end_to_end(headers):
            self.add_header(name, value)
        # Send the head now: a streamed response (SSE) may not produce a byte for a while, and
        # finish() must not invent a Content-Length (HEAD, 304) that Next did not send.
        await self.relay_chunk(b"")

    async def relay_chunk(self, chunk: bytes) -> None:
        self._disarm()  # time spent waiting for a slow client is not Next's idleness
        if self._client_gone:
            return
        if chunk:
            self.write(chunk)
        try:
            await self.flush()
        except StreamClosedError:
            self.on_connection_close()
            return
        self._arm(self.s.idle_timeout, "idle")

    def on_connection_close(self) -> None:
        # The client went away: abort the upstream request so Next stops producing for nobody.
        self._client_gone = True
        self._disarm()
        self._discard_upstream()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._disarm()
        self._discard_upstream()  # no-op after a normal release; a safety net against leaks

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, StreamClosedError):  # the client left mid-upload: not an error
            return
        super().log_exception(typ, value, tb)

    # -- static fast path ---------------------------------------------------------------------

    def _serve_static(self, static: StaticAssets) -> bool:
        """Answer from memory if the asset is known; True when the request is done."""
        if "Range" in self.request.headers:
            return False  # rare for these files; Next.js implements ranges
        asset = static.lookup(self.request.path)
        if asset is None:
            if static.refused(self.request.path):
                self._send_error(404, "Not Found", "No such static file.", None)
                return True
            return False  # e.g. a build newer than the set in memory: Next has it
        self._send_asset(asset)
        return True

    def _send_asset(self, asset: Asset) -> None:
        headers = self.request.headers
        rep = choose(asset, headers.get("Accept-Encoding", ""))
        self.clear_header("Server")
        self.set_header("Cache-Control", CACHE_CONTROL)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Last-Modified", asset.last_modified)
        self.set_header("ETag", rep.etag)
        self.set_header("Content-Type", asset.content_type)
        self.set_header("Vary", "Accept-Encoding")
        if rep.encoding:
            self.set_header("Content-Encoding", rep.encoding)
        if_none_match = headers.get("If-None-Match")
        if if_none_match is not None:
            not_modified = etag_matches(if_none_match, [rep.etag])
        else:
            not_modified = _not_modified_since(
                headers.get("If-Modified-Since"), asset.last_modified
            )
        if not_modified:
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Length", len(rep.body))
        self.finish(rep.body if self.request.method != "HEAD" else None)

    # -- the gateway's own answers ------------------------------------------------------------

    def send_unavailable(self) -> None:
        retry = self.s.upstream.retry_after()
        status = self.s.upstream.status()
        detail = (
            "The application server failed to start; the gateway has given up restarting it."
            if status == "failed"
            else f"The application server is {status}; try again in {retry} s."
        )
        self._send_error(503, "Service Unavailable", detail, retry)

    async def _upstream_unreachable(self, reason: str) -> None:
        # A child that just died is refused before the supervisor has seen it exit; give the
        # supervisor a moment, so a restart is answered with 503 + Retry-After, not 502.
        await asyncio.sleep(0.05)
        if self.s.upstream.target() is None:
            self.send_unavailable()
            return
        log.warning(
            "upstream unreachable for %s %s: %s", self.request.method, self.request.uri, reason
        )
        self._send_error(502, "Bad Gateway", "The application server did not answer.", None)

    def _too_large_detail(self) -> str:
        return f"request bodies are limited to {self.s.max_body_size} bytes"

    def _send_error(
        self, status: int, title: str, detail: str, retry_after: int | None
    ) -> asyncio.Future[None]:
        self.clear()
        self.set_status(status)
        content_type, body = error_page(
            status, title, detail, retry_after, self.request.headers.get("Accept", "")
        )
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        if retry_after is not None:
            self.set_header("Retry-After", str(retry_after))
        return self.finish(body)

    async def _refuse_body(self, status: int, title: str, detail: str) -> None:
        # Tornado closes the connection after this answer, as the body is left unread.
        try:
            await self._send_error(status, title, detail, None)
        except StreamClosedError:
            pass

    def _abort_client(self) -> None:
        """Cut the client connection mid-response, and still log and clean up the request."""
        self.request.connection.close()  # type: ignore[union-attr]
        self._finished = True  # no auto-finish: there is no way to finish this message
        self.application.log_request(self)
        self.on_finish()


def _not_modified_since(header: str | None, last_modified: str) -> bool:
    if not header:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
        return email.utils.parsedate_to_datetime(last_modified) <= since
    except (TypeError, ValueError):
        return False
