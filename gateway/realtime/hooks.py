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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from gateway.realtime import jsonsafe
from gateway.realtime.codes import Disconnect, DisconnectReply, Error, ErrorReply
from gateway.realtime.commands import (
    BadRequest,
    Caller,
    ConnectRequest,
    PublishRequest,
    RpcRequest,
    SendRequest,
    SubscribeRequest,
    parse_disconnect,
)
from gateway.realtime.protocol import Raw, encode, raw

log = logging.getLogger("gateway.hooks")

UNAVAILABLE = Error(100, "internal server error", temporary=True)
NO_DEFAULT = Disconnect(0, "")  # parse_disconnect's default, never a valid answer


class HookCaller(Protocol):
    async def call(self, path: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Ask the app's route handler at ``path``; its result, or raises ErrorReply /
        DisconnectReply per its answer."""


# -- what each hook is sent: built here only (the TypeScript types in nextjs-app's
# lib/realtime/route-hooks.ts are checked against these by tests/unit/realtime/test_hooks.py)


def connect_payload(
    client: str, user: str, req: ConnectRequest, transport: str, headers: dict[str, str]
) -> dict[str, Any]:
    return {
        "client": client,
        "transport": transport,
        "protocol": "json",
        "user": user,
        "authenticated": bool(req.token),
        "data": req.data,
        "name": req.name,
        "version": req.version,
        "headers": headers,
    }


def subscribe_payload(caller: Caller, req: SubscribeRequest) -> dict[str, Any]:
    return {**_who(caller), "channel": req.channel, "data": req.data}


def publish_payload(caller: Caller, req: PublishRequest) -> dict[str, Any]:
    return {**_who(caller), "channel": req.channel, "data": req.data}


def rpc_payload(caller: Caller, req: RpcRequest) -> dict[str, Any]:
    return {**_who(caller), "method": req.method, "data": req.data}


def send_payload(caller: Caller, req: SendRequest) -> dict[str, Any]:
    return {**_who(caller), "data": req.data}


def _who(caller: Caller) -> dict[str, Any]:
    return {"client": caller.client, "user": caller.user, "info": caller.info}


# -- what a hook's result may carry -----------------------------------------------------------


def _expire_at(result: dict[str, Any]) -> float | None:
    value = result.get("expire_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        log.warning("hook answered a bad expire_at %r", value)
        raise ErrorReply(UNAVAILABLE)
    return float(value)


@dataclass(frozen=True)
class ConnectAnswer:
    user: str | None = None
    """Who the connection is (None: keep the token's user)."""
    info: Raw | None = None
    expire_at: float | None = None
    channels: list[str] | None = None
    """Server-side subscriptions (None: keep the token's)."""
    data: Any = None

    @classmethod
    def parse(cls, result: dict[str, Any]) -> ConnectAnswer:
        user = result.get("user")
        channels = result.get("channels")
        if user is not None and not isinstance(user, str):
            log.warning("connect hook answered a user that is not a string")
            raise ErrorReply(UNAVAILABLE)
        if channels is not None and not (
            isinstance(channels, list) and all(isinstance(c, str) for c in channels)
        ):
            log.warning("connect hook answered channels that are not a list of strings")
            raise ErrorReply(UNAVAILABLE)
        return cls(
            user=user,
            info=raw(result["info"]) if "info" in result else None,
            expire_at=_expire_at(result),
            channels=channels,
            data=result.get("data"),
        )


@dataclass(frozen=True)
class SubscribeAnswer:
    info: Raw | None = None
    expire_at: float | None = None
    data: Any = field(default=None)

    @classmethod
    def parse(cls, result: dict[str, Any]) -> SubscribeAnswer:
        return cls(
            info=raw(result["info"]) if "info" in result else None,
            expire_at=_expire_at(result),
            data=result.get("data"),
        )


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
        try:
            spec = parse_disconnect(disconnect, NO_DEFAULT)
        except BadRequest:
            spec = NO_DEFAULT
        if spec is not NO_DEFAULT and "code" in disconnect:
            raise DisconnectReply(spec)
        log.warning("%s hook %s: bad disconnect %r", event, path, disconnect)
        raise ErrorReply(UNAVAILABLE)
    error = answer.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message", "")
        if (
            isinstance(code, int)
            and not isinstance(code, bool)
            and code > 0
            and isinstance(message, str)
        ):
            raise ErrorReply(Error(code, message, error.get("temporary") is True))
        log.warning("%s hook %s: bad error %r", event, path, error)
        raise ErrorReply(UNAVAILABLE)
    result = answer.get("result", {})
    if not isinstance(result, dict):
        log.warning("%s hook %s: result must be an object", event, path)
        raise ErrorReply(UNAVAILABLE)
    return result
