"""The realtime endpoints besides the WebSocket: thin Tornado drivers over the same session.

When WebSockets are blocked (corporate proxies, some antivirus products), centrifuge-js falls
back to **bidirectional emulation**: the session's replies and pushes stream down one long
HTTP response, and its commands come up as separate POSTs (emulation.py routes those to the
process holding the session):

- ``POST /connection/http_stream``: the body holds the connect command; the response streams
  newline-delimited JSON (a fetch ``ReadableStream`` reads it);
- ``GET /connection/sse?cf_connect=<commands>``: the same as ``text/event-stream``;
- ``POST /connection/emulation``: ``{"session": ..., "node": ..., "data": "<commands>"}``.

**Unidirectional** endpoints push only, with no SDK needed: the connect request comes with the
HTTP request (``cf_connect`` or the body) and the token's ``channels`` claim decides what is
received (server-side subscriptions); messages are the protocol's pushes unwrapped
(``{"connect":...}``, ``{"channel":...,"pub":...}``, ``{}`` pings, ``{"disconnect":...}``):

- ``GET|POST /connection/uni_sse``, ``POST /connection/uni_http_stream`` (here);
- ``/connection/uni_websocket`` (transport.py).

Every stream: no buffering (``X-Accel-Buffering: no`` for nginx, never compressed, each flush
of the session's outbox goes to the socket at once), heartbeats (the session's pings), and the
same auth, limits, codes, recovery and slow-consumer rules as the WebSocket: the session is the
same :class:`~gateway.realtime.client.ClientSession`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from tornado.iostream import IOStream, StreamClosedError
from tornado.web import RequestHandler, stream_request_body

from gateway.httpbase import GatewayHandler
from gateway.realtime import jsonsafe
from gateway.realtime.client import ClientSession
from gateway.realtime.emulation import SESSION_ID, Outcome
from gateway.realtime.node import Node
from gateway.realtime.protocol import ProtocolError, decode_commands

log = logging.getLogger("gateway.realtime")

_HEADERS_FOR_HOOKS = ("Cookie", "User-Agent", "Origin", "Accept-Language")


def hook_headers(handler: RequestHandler) -> dict[str, str]:
    """Headers of the opening request that connect hooks may need."""
    headers = handler.request.headers
    return {name.lower(): headers[name] for name in _HEADERS_FOR_HOOKS if name in headers}


def origin_allowed(origin: str, host: str, allowed_origins: list[str]) -> bool:
    """Cross-site guard for every realtime endpoint: by default only the gateway's own origin
    (``realtime.allowed_origins`` adds others; ``*`` allows any)."""
    if "*" in allowed_origins or origin in allowed_origins:
        return True
    return urlparse(origin).netloc.lower() == host.lower()


def write_now(stream: IOStream, data: bytes, on_drained: Callable[[], None]) -> bool:
    """Write ``data`` to ``stream``: straight to the socket when nothing is queued in the stream
    (IOStream.write's bookkeeping doubled the cost of a small frame in bench/fanout.py), the
    rest through the stream. True if it all went at once; else ``on_drained`` is called when
    it has (or the stream closed: the transport's close handling follows)."""
    if stream.closed():
        return True
    if not stream.writing():
        try:
            sent = stream.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return True  # the connection is gone; its close callback follows
        if sent == len(data):
            return True
        data = data[sent:]
    try:
        written = stream.write(data)
    except StreamClosedError:
        return True
    if written.done():
        return True

    def drained(future: Any) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: a closed stream is handled by the close callback
        on_drained()

    written.add_done_callback(drained)
    return False


# -- framing: one outbox flush (lines joined by \n) -> bytes of the response body ------------


def ndjson(payload: bytes) -> bytes:
    return payload + b"\n"


def event_stream(payload: bytes) -> bytes:
    # One event per flush; EventSource joins its data lines with \n, which is how the SDK
    # splits a batch of messages again.
    return b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n"


_PUSH = b'{"push":'


def unwrap_pushes(payload: bytes) -> bytes:
    """A flush as a unidirectional client gets it: each push without its ``{"push":...}``
    envelope, pings as they are, nothing else (there are no replies without commands)."""
    if b"\n" not in payload:
        if payload.startswith(_PUSH):
            return payload[len(_PUSH) : -1]
        return payload if payload == b"{}" else b""
    lines = []
    for line in payload.split(b"\n"):
        if line.startswith(_PUSH):
            lines.append(line[len(_PUSH) : -1])
        elif line == b"{}":
            lines.append(line)
    return b"\n".join(lines)


# -- the streams -----------------------------------------------------------------------------


@stream_request_body
class _Stream(GatewayHandler):
    """One session on one long response. Subclasses say how it opens and how it is framed."""

    name = ""
    emulation = True
    unidirectional = False
    content_type = "application/x-ndjson"
    methods: tuple[str, ...] = ("POST",)

    def initialize(self, node: Node) -> None:
        self.node = node
        self.limit = node.cfg.transports.max_request_size
        self.session: ClientSession | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._chunked = False
        self._stream: IOStream | None = None
        self._done: asyncio.Future[None] | None = None

    # -- the opening request ------------------------------------------------------------------

    def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        origin = self.request.headers.get("Origin")
        if origin and not origin_allowed(origin, self.request.host, self.node.cfg.allowed_origins):
            # A page of another site (the browser says which) may not open a session with
            # the user's cookies, nor post commands (as for the WebSocket: check_origin).
            log.info("refused %s from origin %s (host %s)", self.name, origin, self.request.host)
            self._refuse(403, "forbidden", "origin not allowed")
            return
        if self.request.method not in self.methods:
            self._refuse(405, "method_not_allowed", f"use {' or '.join(self.methods)}")
            return
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            # Answered now; Tornado still reads (and drops) the body, bounded by
            # server.max_body_size, so a client that sends it all first reads the 413.
            self._refuse(413, "too_large", f"a body is at most {self.limit} bytes")

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size <= self.limit:
            self._body.append(chunk)
        else:
            self._body = []

    def options(self) -> None:
        self.set_header("Allow", ", ".join((*self.methods, "OPTIONS")))
        self.set_status(204)

    def _refuse(self, status: int, error: str, detail: str) -> None:
        self.set_status(status)
        if status == 405:
            self.set_header("Allow", ", ".join((*self.methods, "OPTIONS")))
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": error, "detail": detail}))

    def _opening_body(self) -> str | None:
        """The POST body as text, or None once refused (413, 400)."""
        if self._size > self.limit:
            self._refuse(413, "too_large", f"a body is at most {self.limit} bytes")
            return None
        try:
            return b"".join(self._body).decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(400, "bad_request", "the body is not UTF-8")
            return None

    # -- the response -------------------------------------------------------------------------

    async def _serve(self, opening: Callable[[ClientSession], Any]) -> None:
        """Send the response head, start the session with ``opening``, and hold the response
        open until the session or the client ends it."""
        self.set_header("Content-Type", self.content_type)
        self.set_header("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0")
        self.set_header("Pragma", "no-cache")
        self.set_header("Expires", "0")
        self.set_header("X-Accel-Buffering", "no")  # nginx in front: pass each flush at once
        self._chunked = self.request.version == "HTTP/1.1"
        self._done = asyncio.get_running_loop().create_future()
        try:
            await self.flush()
        except StreamClosedError:
            return
        connection = self.request.connection
        self._stream = getattr(connection, "stream", None)
        if self._stream is None or self._stream.closed():
            return
        self.session = ClientSession(self.node.session_context, self, hook_headers(self))
        pending = opening(self.session)
        if pending is not None:
            await pending
        await self._done
        stream = self._stream
        if not stream.closed() and stream.writing():
            # The session is over but the client has not read what was sent (a slow consumer
            # disconnected with 3008): give it a moment, then cut the connection rather than
            # hold it and its buffered bytes for as long as the client likes.
            asyncio.get_running_loop().call_later(_UNREAD_GRACE, _close_if_stuck, stream)

    def on_connection_close(self) -> None:
        if self.session is not None:
            self.session.transport_closed()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- the session's transport --------------------------------------------------------------

    @property
    def remote(self) -> str:
        return self.request.remote_ip or "-"

    def frame(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def send_frame(self, payload: bytes, on_drained: Callable[[], None]) -> bool:
        stream = self._stream
        if stream is None or self._done is None or self._done.done():
            return True
        data = self.frame(payload)
        if not data:
            return True
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        return write_now(stream, data, on_drained)

    def close_with(self, code: int, reason: str) -> None:
        """The session ended (its disconnect push is out): end the response."""
        if self._done is not None and not self._done.done():
            self._done.set_result(None)


_UNREAD_GRACE = 5.0


def _close_if_stuck(stream: IOStream) -> None:
    if not stream.closed() and stream.writing():
        stream.close()


class HttpStreamHandler(_Stream):
    """``POST /connection/http_stream``: bidirectional emulation over a streamed response."""

    name = "http_stream"

    def frame(self, payload: bytes) -> bytes:
        return ndjson(payload)

    async def post(self) -> None:
        body = self._opening_body()
        if body is None:
            return
        if not _commands_ok(self, body):
            return
        await self._serve(lambda session: session.feed(body))


class SseHandler(_Stream):
    """``GET /connection/sse?cf_connect=<commands>`` (or ``POST`` with them as the body):
    bidirectional emulation over Server-Sent Events."""

    name = "sse"
    content_type = "text/event-stream; charset=utf-8"
    methods = ("GET", "POST")

    def frame(self, payload: bytes) -> bytes:
        return event_stream(payload)

    async def get(self) -> None:
        commands = self.get_query_argument("cf_connect", "")
        if not commands:
            self._refuse(400, "bad_request", "cf_connect (the connect command) is missing")
            return
        if not _commands_ok(self, commands):
            return
        await self._serve(lambda session: session.feed(commands))

    async def post(self) -> None:
        body = self._opening_body()
        if body is None or not _commands_ok(self, body):
            return
        await self._serve(lambda session: session.feed(body))


def _commands_ok(handler: _Stream, text: str) -> bool:
    """The opening commands are well-formed JSON commands (else 400, before any stream)."""
    try:
        for _ in decode_commands(text):
            pass
    except ProtocolError as e:
        handler._refuse(400, "bad_request", f"malformed commands: {e}")
        return False
    return True


class _UniStream(_Stream):
    emulation = False
    unidirectional = True

    def _connect_request(self, text: str) -> dict[str, Any] | None:
        """The connect request (a JSON object, or nothing: an empty request), or None once
        refused with 400."""
        if not text.strip():
            return {}
        try:
            request = jsonsafe.loads(text)
        except jsonsafe.JsonError as e:
            self._refuse(400, "bad_request", f"the connect request is not JSON: {e}")
            return None
        if request is None:
            return {}
        if not isinstance(request, dict):
            self._refuse(400, "bad_request", "the connect request must be a JSON object")
            return None
        return request

    async def _serve_uni(self, text: str) -> None:
        request = self._connect_request(text)
        if request is None:
            return
        await self._serve(lambda session: session.connect_unidirectional(request))


class UniSseHandler(_UniStream):
    """``GET /connection/uni_sse[?cf_connect=<connect request>]`` or ``POST`` with it as the
    body: a bare ``EventSource`` receives what the token's ``channels`` claim subscribes."""

    name = "uni_sse"
    content_type = "text/event-stream; charset=utf-8"
    methods = ("GET", "POST")

    def frame(self, payload: bytes) -> bytes:
        pushes = unwrap_pushes(payload)
        # One event per message, as Centrifugo's uni_sse: a bare EventSource JSON.parses each
        # event's data, which fails on a batch (unlike the SDK's sse, which splits lines).
        return b"".join(event_stream(line) for line in pushes.split(b"\n")) if pushes else b""

    async def get(self) -> None:
        await self._serve_uni(self.get_query_argument("cf_connect", ""))

    async def post(self) -> None:
        body = self._opening_body()
        if body is not None:
            await self._serve_uni(body)


class UniHttpStreamHandler(_UniStream):
    """``POST /connection/uni_http_stream`` with the connect request as the body."""

    name = "uni_http_stream"

    def frame(self, payload: bytes) -> bytes:
        pushes = unwrap_pushes(payload)
        return ndjson(pushes) if pushes else b""

    async def post(self) -> None:
        body = self._opening_body()
        if body is not None:
            await self._serve_uni(body)


# -- client -> server commands of emulated sessions -------------------------------------------


class EmulationHandler(_Stream):
    """``POST /connection/emulation``: ``{"session", "node", "data"}`` from the SDK. 204 once
    the session took the commands (its replies go out on its stream); 404 when that session
    does not exist (any more); 504 when the process holding it did not answer in time; 503
    when the engine that reaches it is down; 400/413/415 for a request that is not one."""

    name = "emulation"

    def frame(self, payload: bytes) -> bytes:  # pragma: no cover - never a stream
        return b""

    async def post(self) -> None:
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("application/octet-stream"):
            self._refuse(415, "unsupported", "only the JSON protocol is served")
            return
        body = self._opening_body()
        if body is None:
            return
        try:
            request = jsonsafe.loads(body)
        except jsonsafe.JsonError as e:
            self._refuse(400, "bad_request", f"not JSON: {e}")
            return
        if not isinstance(request, dict):
            self._refuse(400, "bad_request", "the body must be a JSON object")
            return
        fields = {}
        for key in ("session", "node", "data"):
            value = request.get(key)
            if not isinstance(value, str) or not value:
                self._refuse(400, "bad_request", f"{key} must be a non-empty string")
                return
            fields[key] = value
        if not SESSION_ID.fullmatch(fields["session"]):
            self._refuse(404, "no_session", "no such session")
            return
        outcome = await self.node.emulation.deliver(
            fields["node"], fields["session"], fields["data"]
        )
        if outcome is Outcome.DONE:
            self.set_status(204)
            self.finish()
        elif outcome is Outcome.NO_SESSION:
            self._refuse(404, "no_session", "the session is gone; the client reconnects")
        elif outcome is Outcome.TIMEOUT:
            self._refuse(504, "timeout", "the process holding the session did not answer")
        else:
            self._refuse(503, "unavailable", "the engine is unavailable; retry")
