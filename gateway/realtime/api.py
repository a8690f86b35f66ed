"""The server API: ``POST /_gateway/api/<method>`` for Next.js route handlers and Server
Actions (the shape of Centrifugo's HTTP server API).

Auth: ``X-API-Key: <key>`` or ``Authorization: apikey <key>``, compared in constant time, from
peers in ``api.allowed_networks`` only (loopback by default). Replies are ``{"result": ...}`` or
``{"error": {"code": n, "message": "..."}}`` with HTTP 200, as Centrifugo does; a bad key is 401,
a peer not allowed 403, a body that is not a JSON object 400 (strict JSON: jsonsafe).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.httpbase import GatewayHandler
from gateway.proxy.headers import ForwardingPolicy, in_networks, parse_networks
from gateway.realtime import codes, jsonsafe
from gateway.realtime.broker import BrokerUnavailable, StreamPosition, Unrecoverable
from gateway.realtime.codes import Disconnect, Error, ErrorReply
from gateway.realtime.node import Node
from gateway.realtime.protocol import Raw, encode, raw

log = logging.getLogger("gateway.api")

METHODS = (
    "publish",
    "broadcast",
    "unsubscribe",
    "disconnect",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
)


class ServerApi:
    """The API's operations, independent of HTTP (tested directly)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        handler: Callable[[dict[str, Any]], Awaitable[Any]] | None = getattr(
            self, "m_" + method, None
        )
        if method not in METHODS or handler is None:
            raise ErrorReply(codes.METHOD_NOT_FOUND)
        return await handler(params)

    def _channel(self, params: dict[str, Any], key: str = "channel") -> str:
        channel = params.get(key)
        if not isinstance(channel, str) or not channel:
            raise ErrorReply(Error(107, f"bad request: {key} is required"))
        if self.node.namespace(channel) is None:
            raise ErrorReply(codes.UNKNOWN_CHANNEL)
        return channel

    async def m_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if "data" not in params:
            raise ErrorReply(Error(107, "bad request: data is required"))
        key = params.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise ErrorReply(Error(107, "bad request: idempotency_key must be a string"))
        tags = params.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ErrorReply(Error(107, "bad request: tags must map strings to strings"))
        position = await self.node.publish(
            channel, raw(params["data"]), idempotency_key=key, tags=tags
        )
        return {"offset": position.offset, "epoch": position.epoch} if position else {}

    async def m_broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = params.get("channels")
        if not isinstance(channels, list) or "data" not in params:
            raise ErrorReply(Error(107, "bad request: channels and data are required"))
        data = raw(params["data"])
        responses = []
        for channel in channels:
            try:
                name = self._channel({"channel": channel})
                position = await self.node.publish(name, data)
                result = {"offset": position.offset, "epoch": position.epoch} if position else {}
                responses.append({"result": result})
            except ErrorReply as e:
                responses.append({"error": e.error.as_dict()})
        return {"responses": responses}

    async def m_unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        user = params.get("user")
        if not isinstance(user, str):
            raise ErrorReply(Error(107, "bad request: user is required"))
        await self.node.unsubscribe_user(channel, user, str(params.get("client", "")))
        return {}

    async def m_disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user")
        if not isinstance(user, str):
            raise ErrorReply(Error(107, "bad request: user is required"))
        spec = params.get("disconnect") or {}
        code = spec.get("code", codes.FORCE_NO_RECONNECT.code) if isinstance(spec, dict) else None
        reason = (
            spec.get("reason", codes.FORCE_NO_RECONNECT.reason) if isinstance(spec, dict) else None
        )
        if not isinstance(code, int) or not 3000 <= code <= 4999 or not isinstance(reason, str):
            raise ErrorReply(
                Error(107, "bad request: disconnect needs a code in 3000-4999 and a reason")
            )
        self.node.disconnect_user(user, Disconnect(code, reason), str(params.get("client", "")))
        return {}

    async def m_presence(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._presence_channel(params)
        members = await self.node.presence.get(channel)
        return {"presence": {cid: info.as_dict() for cid, info in members.items()}}

    async def m_presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._presence_channel(params)
        clients, users = await self.node.presence.stats(channel)
        return {"num_clients": clients, "num_users": users}

    def _presence_channel(self, params: dict[str, Any]) -> str:
        channel = self._channel(params)
        ns = self.node.namespace(channel)
        if ns is None or not ns.presence:
            raise ErrorReply(codes.NOT_AVAILABLE)
        return channel

    async def m_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if self.node.history_options(channel) is None:
            raise ErrorReply(codes.NOT_AVAILABLE)
        limit = params.get("limit", 0)
        since = params.get("since")
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ErrorReply(Error(107, "bad request: limit must be an integer"))
        position = None
        if isinstance(since, dict):
            offset, epoch = since.get("offset", 0), since.get("epoch", "")
            if not isinstance(offset, int) or not isinstance(epoch, str):
                raise ErrorReply(Error(107, "bad request: since needs offset and epoch"))
            position = StreamPosition(offset, epoch)
        try:
            pubs, top = await self.node.broker.history(
                channel, position, limit, bool(params.get("reverse", False))
            )
        except Unrecoverable:
            raise ErrorReply(codes.UNRECOVERABLE_POSITION) from None
        return {
            "publications": [Raw(p.encoded()) for p in pubs],
            "offset": top.offset,
            "epoch": top.epoch,
        }

    async def m_history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        await self.node.broker.remove_history(channel)
        return {}

    async def m_channels(self, params: dict[str, Any]) -> dict[str, Any]:
        pattern = params.get("pattern", "")
        channels = self.node.channels()
        if isinstance(pattern, str) and pattern:
            import fnmatch

            channels = {c: n for c, n in channels.items() if fnmatch.fnmatchcase(c, pattern)}
        return {"channels": {c: {"num_clients": n} for c, n in channels.items()}}

    async def m_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": [self.node.info()]}


class ApiHandler(GatewayHandler):
    def initialize(
        self,
        api: ServerApi,
        key: str,
        allowed_networks: list[str],
        forwarding: ForwardingPolicy | None = None,
    ) -> None:
        self.api = api
        self.key = key.encode()
        self.networks = parse_networks(allowed_networks)
        self.forwarding = forwarding or ForwardingPolicy()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def check_xsrf_cookie(self) -> None:
        pass

    def _peer_allowed(self) -> bool:
        client = self.forwarding.client_ip(self.request.remote_ip or "", self.request.headers)
        return in_networks(client, self.networks)

    def _key_ok(self) -> bool:
        given = self.request.headers.get("X-API-Key", "")
        auth = self.request.headers.get("Authorization", "")
        if not given and auth.lower().startswith("apikey "):
            given = auth[7:].strip()
        return bool(self.key) and hmac.compare_digest(given.encode(), self.key)

    async def post(self, method: str) -> None:
        if not self._peer_allowed():
            self._fail(403, "forbidden", "this address may not use the server API")
            return
        if not self._key_ok():
            self._fail(401, "unauthorized", "missing or wrong API key")
            return
        try:
            params = jsonsafe.loads(self.request.body or b"{}")
        except jsonsafe.JsonError as e:
            self._fail(400, "bad_request", f"the body must be a JSON object: {e}")
            return
        if not isinstance(params, dict):
            self._fail(400, "bad_request", "the body must be a JSON object")
            return
        try:
            result = await self.api.call(method, params)
            body = b'{"result":%s}' % encode(result)
        except ErrorReply as e:
            body = json.dumps({"error": e.error.as_dict()}).encode()
        except BrokerUnavailable as e:
            # Fail fast and say it is worth retrying: the engine is reconnecting.
            log.warning("server API %s: engine unavailable: %s", method, e)
            error = Error(100, "engine unavailable, retry", temporary=True)
            body = json.dumps({"error": error.as_dict()}).encode()
        except Exception:
            log.exception("server API %s failed", method)
            body = json.dumps({"error": codes.INTERNAL.as_dict()}).encode()
        self.finish(body)

    def _fail(self, status: int, error: str, detail: str) -> None:
        self.set_status(status)
        self.finish({"error": error, "detail": detail})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason.lower().replace(" ", "_")})
