"""WebSocket upgrades the gateway does not own (HMR in ``next dev``, an app's own sockets).

The client is accepted only after the child has accepted the same upgrade, so the subprotocol
the child chose is the one the client gets, and a refusal (404, 403...) reaches the client as
the child's HTTP answer. Messages are relayed both ways as they come; a close on one side is
passed to the other with its code and reason.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from tornado import httputil
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.routing import Matcher
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketHandler,
    websocket_connect,
)

from gateway.httpbase import GatewayHandler
from gateway.proxy.headers import ForwardingPolicy, local_port
from gateway.proxy.upstream import Upstream

log = logging.getLogger("gateway.proxy.websocket")

# Handshake headers each side negotiates for itself (RFC 6455 §4).
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "host",
    }
)
# Close codes that must not be sent in a close frame (RFC 6455 §7.4.1).
_RESERVED_CLOSE = frozenset({1005, 1006, 1015})


class DevOriginHint:
    """`next dev` of Next.js 16 refuses the HMR WebSocket of a page whose Origin is not
    localhost, the address it listens on, or a host next.config's ``allowedDevOrigins`` lists:
    someone opening the dev gateway by a LAN name gets the page, no hot reload, and a message in
    Next's log only. When an upgrade from such an origin is not accepted, say what to do, once
    per host."""

    _LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
    _MAX_HOSTS = 64  # Origin is the client's to choose: the memory of hosts told is bounded

    def __init__(self) -> None:
        self._told: set[str] = set()

    def refused(self, origin: str | None, path: str) -> None:
        host = urlsplit(origin).hostname if origin else None
        if not host or host in self._LOOPBACK or host.endswith(".localhost"):
            return
        if host in self._told or len(self._told) >= self._MAX_HOSTS:
            return
        self._told.add(host)
        log.warning(
            "next dev did not accept the WebSocket %s of a page opened as %s (no hot reload "
            "there): Next.js 16 accepts dev origins other than localhost only when next.config "
            "lists them: add allowedDevOrigins: ['%s'] and restart",
            path.split("?", 1)[0],
            host,
            host,
        )


class WebSocketUpgrade(Matcher):
    """Matches requests that ask to upgrade to WebSocket, whatever their path."""

    def match(self, request: httputil.HTTPServerRequest) -> dict[str, Any] | None:
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return {}
        return None


class WebSocketPassthrough(GatewayHandler, WebSocketHandler):
    """Bridges one client WebSocket to the same path on the child."""

    def initialize(
        self,
        upstream: Upstream,
        forwarding: ForwardingPolicy,
        connect_timeout: float,
        first_byte_timeout: float = 300.0,
        dev_origins: DevOriginHint | None = None,
    ) -> None:
        self.upstream = upstream
        self.forwarding = forwarding
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.dev_origins = dev_origins
        self.child: WebSocketClientConnection | None = None
        self._closing_from_child = False

    async def get(self, *args: Any, **kwargs: Any) -> None:
        target = self.upstream.target()
        if target is None:
            self.set_status(503)
            self.set_header("Retry-After", str(self.upstream.retry_after()))
            self.finish({"error": "service_unavailable", "detail": "the application is starting"})
            return
        req = self.request
        if not req.uri or not req.uri.startswith("/"):
            self.set_status(400)  # RFC 9112 §3.2: origin-form only (framing.check_target)
            self.finish({"error": "bad_request", "detail": "origin-form targets only"})
            return
        headers = HTTPHeaders()
        for name, value in self.forwarding.upstream_headers(
            req.headers,
            req.remote_ip or "",
            req.protocol,
            req.host,
            local_port(req),
            drop=_HANDSHAKE,
        ):
            headers.add(name, value)
        headers["Host"] = req.host
        offered = [
            p.strip() for p in req.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        url = f"ws://{target[0]}:{target[1]}{req.uri}"
        try:
            self.child = await websocket_connect(
                HTTPRequest(
                    url,
                    headers=headers,
                    connect_timeout=self.connect_timeout,
                    # The child's answer to the upgrade is its first byte (Tornado's own
                    # default would be 20 s, whatever proxy.first_byte_timeout says).
                    request_timeout=self.first_byte_timeout,
                ),
                on_message_callback=self._from_child,
                subprotocols=offered or None,
                max_message_size=64 * 1024 * 1024,
            )
        except HTTPClientError as e:
            if e.code == 599 or e.code < 400 or e.response is None:
                # No answer at all (Tornado's 599), or one that is not a refusal (a page
                # answered 200 to an upgrade it does not serve): the child is not a WebSocket
                # server for this path.
                status = 504 if "Timeout" in str(e) else 502
                log.info("websocket upgrade for %s not accepted by the child: %s", req.uri, e)
                self._not_accepted()
                self.set_status(status)
                self.finish({"error": "bad_gateway" if status == 502 else "gateway_timeout"})
                return
            self._not_accepted()
            self.set_status(e.code)  # the child refused the upgrade: pass its answer on
            self.finish(e.response.body)
            return
        except OSError as e:
            log.warning("websocket to the child failed for %s: %s", req.uri, e)
            self._not_accepted()
            self.set_status(502)
            self.finish({"error": "bad_gateway"})
            return
        await super().get(*args, **kwargs)

    def _not_accepted(self) -> None:
        if self.dev_origins is not None:
            self.dev_origins.refused(self.request.headers.get("Origin"), self.request.uri or "")

    def check_origin(self, origin: str) -> bool:
        return True  # Origin is forwarded: the child applies its own policy

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.child.selected_subprotocol if self.child is not None else None

    def on_message(self, message: str | bytes) -> None:
        if self.child is not None:
            self.child.write_message(message, binary=isinstance(message, bytes))

    def _from_child(self, message: str | bytes | None) -> None:
        if message is None:  # the child closed
            child = self.child
            code = child.close_code if child is not None else None
            reason = child.close_reason if child is not None else None
            self._closing_from_child = True
            self.close(code if code not in _RESERVED_CLOSE else None, reason)
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:  # the client is already gone; on_close tidies up
            return

    def on_close(self) -> None:
        if self.child is not None and not self._closing_from_child:
            code = self.close_code if self.close_code not in _RESERVED_CLOSE else None
            self.child.close(code, self.close_reason)
