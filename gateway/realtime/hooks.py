"""Realtime events answered by the Next.js app: the "proxy hooks".

When configured, the gateway asks a route handler of the Next.js child, over loopback, before it
lets a client connect, subscribe or publish, and to answer RPCs (docs/hooks.md has the contract).
A hook answers with JSON, one of::

    {"result": {...}}                                  allow (with what result may carry)
    {"error": {"code": 403, "message": "not allowed"}} refuse this command (the client gets it)
    {"disconnect": {"code": 4001, "reason": "banned"}} close the connection

Failures map to the protocol: a hook that times out, answers an HTTP error or not strict JSON
(jsonsafe: NaN, lone surrogates and deep nesting are not), or a child that is not running, gives
the client error 100 with ``temporary: true`` (the SDK retries).
Calls are asynchronous HTTP: a slow hook delays the client that asked, nobody else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from gateway.realtime import jsonsafe
from gateway.realtime.codes import Disconnect, DisconnectReply, Error, ErrorReply
from gateway.realtime.protocol import encode

log = logging.getLogger("gateway.hooks")

UNAVAILABLE = Error(100, "internal server error", temporary=True)


class HttpHooks:
    """Calls hooks on the Next.js child (``target()`` gives its loopback address)."""

    def __init__(
        self, target: Callable[[], tuple[str, int] | None], key: str, timeout: float
    ) -> None:
        self.target = target
        self.key = key
        self.timeout = timeout
        self._http = AsyncHTTPClient(force_instance=True, max_clients=256)

    async def call(self, path: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The hook's ``result``; raises ErrorReply or DisconnectReply per its answer."""
        target = self.target()
        if target is None:
            log.info("%s hook %s: the application is not running", event, path)
            raise ErrorReply(UNAVAILABLE)
        request = HTTPRequest(
            f"http://{target[0]}:{target[1]}{path}",
            method="POST",
            body=encode(payload),  # splices raw JSON (a connection's info) as it is
            headers={
                "Content-Type": "application/json",
                "X-Gateway-Hook": event,
                # Lets the route handler check that the call comes from the gateway.
                "X-Gateway-Key": self.key,
            },
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await self._http.fetch(request, raise_error=False)
        except (HTTPClientError, OSError, TimeoutError) as e:
            log.warning("%s hook %s failed: %s", event, path, e)
            raise ErrorReply(UNAVAILABLE) from None
        if response.code != 200:
            log.warning("%s hook %s answered HTTP %s", event, path, response.code)
            raise ErrorReply(UNAVAILABLE)
        try:
            answer = jsonsafe.loads(response.body or b"")
        except jsonsafe.JsonError:
            answer = None
        if not isinstance(answer, dict):
            log.warning("%s hook %s did not answer a JSON object", event, path)
            raise ErrorReply(UNAVAILABLE)
        return interpret(answer, event, path)

    def close(self) -> None:
        self._http.close()


def interpret(answer: dict[str, Any], event: str, path: str) -> dict[str, Any]:
    """Map a hook's answer to a result, an error reply or a disconnect."""
    disconnect = answer.get("disconnect")
    if isinstance(disconnect, dict):
        code, reason = disconnect.get("code"), disconnect.get("reason", "")
        if isinstance(code, int) and 3000 <= code <= 4999 and isinstance(reason, str):
            raise DisconnectReply(Disconnect(code, reason))
        log.warning("%s hook %s: bad disconnect %r", event, path, disconnect)
        raise ErrorReply(UNAVAILABLE)
    error = answer.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message", "")
        if isinstance(code, int) and code > 0 and isinstance(message, str):
            raise ErrorReply(Error(code, message, bool(error.get("temporary", False))))
        log.warning("%s hook %s: bad error %r", event, path, error)
        raise ErrorReply(UNAVAILABLE)
    result = answer.get("result", {})
    if not isinstance(result, dict):
        log.warning("%s hook %s: result must be an object", event, path)
        raise ErrorReply(UNAVAILABLE)
    return result
