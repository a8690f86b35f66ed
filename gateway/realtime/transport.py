"""The WebSocket endpoint, ``/connection/websocket``: a thin Tornado driver over the session.

It moves frames in and out and nothing else: text frames go to
:meth:`ClientSession.handle_frame`; the session's outbox writes whole frames through
:meth:`send_frame` straight onto the socket's stream (one pre-built frame per flush, instead
of Tornado's per-message ``write_message`` machinery, measured in bench/fanout.py).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream
from tornado.websocket import WebSocketHandler, WebSocketProtocol13

from gateway.httpbase import GatewayHandler
from gateway.realtime import codes, jsonsafe
from gateway.realtime.client import ClientSession
from gateway.realtime.http_transports import origin_allowed, unwrap_pushes, write_now
from gateway.realtime.node import Node

log = logging.getLogger("gateway.realtime")


def frame_header(length: int) -> bytes:
    """RFC 6455 §5.2: FIN + text opcode, unmasked (server to client), payload length."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class _Protocol(WebSocketProtocol13):
    """Tornado's protocol, closing with 1007 on a text frame that is not UTF-8 (RFC 6455
    §7.4.1) where Tornado would drop the connection without a close code."""

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x1 and not self._frame_compressed:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8")
                return None
        return super()._handle_message(opcode, data)


class RealtimeWebSocket(GatewayHandler, WebSocketHandler):
    def initialize(self, node: Node, allowed_origins: list[str]) -> None:
        self.node = node
        self.allowed_origins = allowed_origins
        self.session: ClientSession | None = None

    # -- Tornado hooks ------------------------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        """Cross-site WebSocket hijacking guard: by default only the gateway's own origin."""
        allowed = origin_allowed(origin, self.request.host, self.allowed_origins)
        if not allowed:
            log.info("refused WebSocket from origin %s (host %s)", origin, self.request.host)
        return allowed

    def get_websocket_protocol(self) -> Any:
        protocol = super().get_websocket_protocol()
        if protocol is not None:
            protocol.__class__ = _Protocol  # same object; one method overridden
        return protocol

    @property
    def max_message_size(self) -> int:
        return self.node.cfg.max_message_size

    def get_compression_options(self) -> dict[str, Any] | None:
        return None  # no permessage-deflate: frames are small and fan-out is CPU-bound

    def open(self, *args: Any, **kwargs: Any) -> None:
        headers = {
            name.lower(): self.request.headers[name]
            for name in ("Cookie", "User-Agent", "Origin", "Accept-Language")
            if name in self.request.headers
        }
        self.session = ClientSession(self.node.session_context, self, headers)

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        if self.session is None:
            return None
        if isinstance(message, bytes):
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8")
                return None
        # Handled in this turn when possible (see run_eagerly); Tornado reads the next frame
        # only once a returned future is done, so commands keep their order.
        return self.session.feed(message)

    def on_close(self) -> None:
        if self.session is not None:
            self.session.transport_closed()

    # -- the session's transport --------------------------------------------------------------

    @property
    def remote(self) -> str:
        return self.request.remote_ip or "-"

    name = "websocket"
    emulation = False
    unidirectional = False

    def _open_stream(self) -> IOStream | None:
        """The socket's stream while the connection is open (None once it is closing)."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return None
        return getattr(conn, "stream", None)

    def send_frame(self, payload: bytes, on_drained: Callable[[], None]) -> bool:
        stream = self._open_stream()
        if stream is None:
            return True
        return write_now(stream, frame_header(len(payload)) + payload, on_drained)

    def close_with(self, code: int, reason: str) -> None:
        self.close(code, reason)


class UniWebSocket(RealtimeWebSocket):
    """``/connection/uni_websocket``: pushes only, Centrifugo's unidirectional WebSocket. The
    connect request is the ``cf_connect`` query parameter or the first message; what the
    client sends after it is ignored. One push per frame."""

    name = "uni_websocket"
    unidirectional = True

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self._connect_sent = False
        request = self.get_query_argument("cf_connect", "")
        if request:
            self._start(request)

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        if self.session is None or self._connect_sent:
            return None  # pushes only: nothing a client sends after its connect means anything
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self._start(message)
        return None

    def _start(self, text: str) -> None:
        assert self.session is not None
        self._connect_sent = True
        try:
            request = jsonsafe.loads(text) if text.strip() else {}
        except jsonsafe.JsonError:
            request = "malformed"
        if request is None:
            request = {}
        if not isinstance(request, dict):
            self.session.disconnect(codes.BAD_REQUEST_DISCONNECT)
            return
        self.node.background(self.session.connect_unidirectional(request))

    def send_frame(self, payload: bytes, on_drained: Callable[[], None]) -> bool:
        pushes = unwrap_pushes(payload)
        if not pushes:
            return True
        stream = self._open_stream()
        if stream is None:
            return True
        # One push per frame, as Centrifugo's uni_websocket (a bare client JSON.parses each
        # message), still written to the socket together.
        data = b"".join(frame_header(len(line)) + line for line in pushes.split(b"\n"))
        return write_now(stream, data, on_drained)
