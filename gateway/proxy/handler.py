"""The reverse-proxy request handler: every path the gateway does not own goes to Next.js.

Bodies stream in both directions. A request body is written upstream chunk by chunk as Tornado
reads it (``stream_request_body``); a response body is written to the client chunk by chunk and
each write waits for the client's socket to drain (``await flush()``), which stops reading from
Next until it does: a slow client slows Next instead of filling the gateway's memory.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.web import RequestHandler, stream_request_body

from gateway.proxy.headers import end_to_end
from gateway.proxy.upstream import Upstream, UpstreamConnector

log = logging.getLogger("gateway.proxy")

# Client headers that only the gateway may set: it overwrites them with its own view, so a
# client cannot spoof its address or scheme to Next.
_FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
    }
)
# CVE-2025-29927: this internal header lets a request skip Next.js middleware.
_NEVER_FORWARD = frozenset({"x-middleware-subrequest", "expect"}) | _FORWARDING
# Tornado answers `Expect: 100-continue` itself before the body is read; Next must not again.

_UPSTREAM_PARAMS = HTTP1ConnectionParameters(
    no_keep_alive=True,
    decompress=False,  # compressed bytes pass through untouched, Content-Encoding kept
    max_header_size=256 * 1024,
    max_body_size=2**62,  # a response body streams through; its size is not ours to cap
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

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        assert isinstance(start_line, httputil.ResponseStartLine)
        if start_line.code < 200:  # 100 Continue / 103 Early Hints: not relayed
            return None
        self.headers_seen = True
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

    upstream: Upstream
    connector: UpstreamConnector

    def initialize(
        self, upstream: Upstream, connector: UpstreamConnector, max_body_size: int
    ) -> None:
        self.upstream = upstream
        self.connector = connector
        self.max_body_size = max_body_size
        self._stream: IOStream | None = None
        self._conn: HTTP1Connection | None = None
        self._client_gone = False
        self._upstream_failed = False

    # Tornado would add an ETag of its own and answer 304 on its own: the proxy must not.
    def compute_etag(self) -> str | None:
        return None

    async def prepare(self) -> None:
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            await self._send_error_and_close(
                413,
                "Payload Too Large",
                f"request bodies are limited to {self.max_body_size} bytes",
            )
            return
        target = self.upstream.target()
        if target is None:
            self.send_unavailable()
            return
        try:
            self._stream = await self.connector.open(*target)
        except OSError as e:
            await self._upstream_unreachable(e)
            return
        self._conn = HTTP1Connection(self._stream, True, _UPSTREAM_PARAMS)
        start_line = httputil.RequestStartLine(
            self.request.method or "GET", self.request.uri or "/", "HTTP/1.1"
        )
        try:
            await self._conn.write_headers(start_line, self._upstream_headers())
        except StreamClosedError:
            self._close_upstream()
            await self._upstream_unreachable(
                ConnectionResetError("closed while sending the request")
            )

    async def data_received(self, chunk: bytes) -> None:
        if self._conn is None or self._finished:
            return  # already answered (413, 503...): the rest of the body is discarded
        try:
            await self._conn.write(chunk)
        except StreamClosedError:
            self._upstream_failed = True

    async def relay(self) -> None:
        if self._finished:
            return
        assert self._conn is not None
        relay = _ResponseRelay(self)
        try:
            if self._upstream_failed:
                raise StreamClosedError()
            self._conn.finish()
            await self._conn.read_response(relay)
        except (StreamClosedError, httputil.HTTPInputError, httputil.HTTPOutputError) as e:
            log.debug("upstream error for %s %s: %r", self.request.method, self.request.uri, e)
        finally:
            self._close_upstream()
        if self._client_gone or self._finished:
            return
        if relay.complete:
            self.finish()
        elif not relay.headers_seen:
            await self._upstream_unreachable(ConnectionResetError("closed before responding"))
        else:
            # Headers (and part of the body) are out: the only honest signal left is to cut the
            # connection, so the client sees a truncated message, never a complete-looking one.
            log.warning(
                "upstream closed mid-response: %s %s", self.request.method, self.request.uri
            )
            self.request.connection.close()  # type: ignore[union-attr]
            self._finished = True

    get = post = put = patch = delete = options = head = relay

    # -- response relay -----------------------------------------------------------------------

    async def start_response(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
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
        if self._client_gone:
            return
        if chunk:
            self.write(chunk)
        try:
            await self.flush()
        except StreamClosedError:
            self.on_connection_close()

    def on_connection_close(self) -> None:
        # The client went away: abort the upstream request so Next stops producing for nobody.
        self._client_gone = True
        self._close_upstream()

    # -- helpers ------------------------------------------------------------------------------

    def _upstream_headers(self) -> httputil.HTTPHeaders:
        req = self.request
        out = httputil.HTTPHeaders()
        for name, value in end_to_end(req.headers):
            if name.lower() not in _NEVER_FORWARD:
                out.add(name, value)
        out["X-Forwarded-For"] = req.remote_ip or ""
        out["X-Forwarded-Proto"] = req.protocol
        out["X-Forwarded-Host"] = req.host
        out["X-Forwarded-Port"] = str(self._local_port())
        out["Connection"] = "close"
        return out

    def _local_port(self) -> int:
        stream = getattr(self.request.connection, "stream", None)
        try:
            return int(stream.socket.getsockname()[1])  # type: ignore[union-attr]
        except (AttributeError, OSError):
            return 443 if self.request.protocol == "https" else 80

    def _close_upstream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def send_unavailable(self) -> None:
        retry = self.upstream.retry_after()
        status = self.upstream.status()
        detail = (
            "The application server failed to start; the gateway has given up restarting it."
            if status == "failed"
            else f"The application server is {status}; try again in {retry} s."
        )
        self._send_error(503, "Service Unavailable", detail, retry)

    async def _upstream_unreachable(self, error: Exception) -> None:
        # A child that just died is refused before the supervisor has seen it exit; give the
        # supervisor a moment, so a restart is answered with 503 + Retry-After, not 502.
        await asyncio.sleep(0.05)
        if self.upstream.target() is None:
            self.send_unavailable()
            return
        log.warning(
            "upstream unreachable for %s %s: %s", self.request.method, self.request.uri, error
        )
        self._send_error(502, "Bad Gateway", "The application server did not answer.", None)

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

    async def _send_error_and_close(self, status: int, title: str, detail: str) -> None:
        # The unread body would otherwise have to be drained to keep the connection in sync.
        await self._send_error(status, title, detail, None)
        self.request.connection.close()  # type: ignore[union-attr]
