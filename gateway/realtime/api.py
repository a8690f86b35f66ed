"""The server API: ``POST /_gateway/api/<method>`` for Next.js route handlers and Server
Actions (the shape of Centrifugo's HTTP server API).

Auth: ``X-API-Key: <key>`` or ``Authorization: apikey <key>``, compared in constant time, from
peers in ``api.allowed_networks`` only (loopback by default). Replies are ``{"result": ...}`` or
``{"error": {"code": n, "message": "..."}}`` with HTTP 200, as Centrifugo does; a bad key is 401,
a peer not allowed 403, a body that is not a JSON object 400 (strict JSON: jsonsafe).
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.httpbase import GatewayHandler
from gateway.netpolicy import TrustedProxies, in_networks, parse_networks
from gateway.realtime import codes, commands, jsonsafe
from gateway.realtime.broker import BrokerUnavailable, Unrecoverable
from gateway.realtime.codes import Error, ErrorReply
from gateway.realtime.node import Node
from gateway.realtime.policy import ChannelRules
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


ApiMethod = Callable[[dict[str, Any]], Awaitable[Any]]
"""One method: the decoded params -> its result (raise commands.BadRequest for bad params)."""


class ServerApi:
    """The API's operations, independent of HTTP (tested directly). Parameters are decoded by
    commands.py, with the same rules as the client protocol's.

    ``extra`` adds methods from outside the realtime side (app.py: ``cache_purge``, the proxy's
    micro-cache), which realtime/ must not import."""

    def __init__(self, node: Node, extra: Mapping[str, ApiMethod] | None = None) -> None:
        self.node = node
        self._methods: dict[str, ApiMethod] = {name: getattr(self, "m_" + name) for name in METHODS}
        self._methods.update(extra or {})

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise ErrorReply(codes.METHOD_NOT_FOUND)
        try:
            return await handler(params)
        except commands.BadRequest as e:
            raise ErrorReply(e.error) from None

    def _rules(self, channel: str) -> ChannelRules:
        return self.node.namespaces.require(channel)

    async def m_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        req = commands.parse_publish(params)
        self._rules(req.channel)
        position = await self.node.publish(
            req.channel,
            raw(req.data),
            idempotency_key=req.idempotency_key or None,
            tags=req.tags,
        )
        return {"offset": position.offset, "epoch": position.epoch} if position else {}

    async def m_broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = params.get("channels")
        if not isinstance(channels, list):
            raise commands.BadRequest("channels must be a list")
        data = raw(commands.data(params, required=True))
        responses = []
        for channel in channels:
            try:
                if not isinstance(channel, str) or not channel:
                    raise commands.BadRequest("channels must be non-empty strings")
                self._rules(channel)
                position = await self.node.publish(channel, data)
                result = {"offset": position.offset, "epoch": position.epoch} if position else {}
                responses.append({"result": result})
            except commands.BadRequest as e:
                responses.append({"error": e.error.as_dict()})
            except ErrorReply as e:
                responses.append({"error": e.error.as_dict()})
        return {"responses": responses}

    async def m_unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = commands.channel_name(params)
        self._rules(channel)
        user = commands.string(params, "user")
        client = commands.string(params, "client", "")
        await self.node.user_action_everywhere(user, client, unsubscribe=channel)
        return {}

    async def m_disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        user = commands.string(params, "user")
        spec = commands.parse_disconnect(params.get("disconnect"), codes.FORCE_NO_RECONNECT)
        client = commands.string(params, "client", "")
        await self.node.user_action_everywhere(user, client, disconnect=spec)
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
        req = commands.parse_channel(params)
        if not self._rules(req.channel).presence.enabled:
            raise ErrorReply(codes.NOT_AVAILABLE)
        return req.channel

    async def m_history(self, params: dict[str, Any]) -> dict[str, Any]:
        req = commands.parse_history(params)
        if self._rules(req.channel).history_options is None:
            raise ErrorReply(codes.NOT_AVAILABLE)
        try:
            pubs, top = await self.node.broker.history(
                req.channel, req.since, req.limit, req.reverse
            )
        except Unrecoverable:
            raise ErrorReply(codes.UNRECOVERABLE_POSITION) from None
        return {
            "publications": [Raw(p.encoded()) for p in pubs],
            "offset": top.offset,
            "epoch": top.epoch,
        }

    async def m_history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = commands.channel_name(params)
        self._rules(channel)
        await self.node.broker.remove_history(channel)
        return {}

    async def m_channels(self, params: dict[str, Any]) -> dict[str, Any]:
        pattern = commands.string(params, "pattern", "")
        channels = self.node.channels()
        if pattern:
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
        forwarding: TrustedProxies | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.api = api
        self.key = key.encode()
        self.networks = parse_networks(allowed_networks)
        self.forwarding = forwarding or TrustedProxies()
        self.draining = draining

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
        if self.draining():
            # Shutting down: the hub has disconnected (or is disconnecting) its clients, so a
            # publication acknowledged now could reach nobody. Retry against the next gateway
            # (with an idempotency_key, a retry is never published twice).
            self.set_header("Retry-After", "1")
            self._fail(503, "draining", "the gateway is shutting down; retry")
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
