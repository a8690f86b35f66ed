"""One connection's session: the state machine behind a WebSocket.

The transport feeds it text frames (:meth:`ClientSession.handle_frame`) and tells it when the
socket closed (:meth:`ClientSession.transport_closed`); the session answers through its
:class:`~gateway.realtime.hub.Outbox` and asks the transport to close with a code. Commands of a
connection are handled in order, one at a time (the transport does not read the next frame
before the last one is handled), so replies and pushes keep their order.

States: ``connecting`` (socket open, no connect command yet: closed as stale after
``connect_timeout``) -> ``connected`` -> ``closed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.realtime import codes
from gateway.realtime.auth import TokenExpired, TokenInvalid, ttl_seconds
from gateway.realtime.broker import BrokerUnavailable, StreamPosition, Unrecoverable
from gateway.realtime.codes import Disconnect, DisconnectReply, ErrorReply
from gateway.realtime.hub import FrameSink, Outbox
from gateway.realtime.protocol import (
    PING,
    ClientInfo,
    Command,
    ProtocolError,
    Publication,
    Raw,
    decode_commands,
    disconnect_push,
    encode,
    error_reply,
    raw,
    reply,
)

if TYPE_CHECKING:
    from gateway.realtime.node import Node

log = logging.getLogger("gateway.realtime")
T = TypeVar("T")


class Transport(FrameSink, Protocol):
    def close_with(self, code: int, reason: str) -> None:
        """Close the socket with this WebSocket close code and reason."""

    @property
    def remote(self) -> str:
        """The peer, for logs."""


@dataclass
class _Subscription:
    channel: str
    recoverable: bool = False
    expire_at: float | None = None
    timer: asyncio.TimerHandle | None = None
    server_side: bool = False
    info: ClientInfo | None = None
    buffer: list[tuple[int, bytes]] | None = field(default=None)


class RateLimiter:
    """Token bucket: ``rate`` commands per second, bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ClientSession:
    def __init__(
        self, node: Node, transport: Transport, http_headers: dict[str, str] | None = None
    ) -> None:
        self.node = node
        self.transport = transport
        self.http_headers = http_headers or {}
        """Headers of the upgrade request that hooks may need (cookie, user-agent, origin)."""
        self.id = str(uuid.uuid4())
        self.user = ""
        self.conn_info: Raw | None = None
        self.state = "connecting"
        self.expire_at: float | None = None
        self.subs: dict[str, _Subscription] = {}
        self.last_seen = time.monotonic()
        self.ping_sent: float | None = None
        self.rate = RateLimiter(node.cfg.command_rate, node.cfg.command_burst)
        self._limited = 0
        self._expiry_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._stale_timer: asyncio.TimerHandle | None = loop.call_later(
            node.cfg.connect_timeout, self._stale
        )
        self.outbox = Outbox(node.hub, transport, node.cfg.write_queue_max_bytes, self._slow)

    # -- from the transport -------------------------------------------------------------------

    def feed(self, frame: str) -> asyncio.Future[None] | None:
        """Handle a frame now; returns a future only if handling had to wait (the transport
        must not read the next frame before it completes), None if it is already done."""
        return run_eagerly(self.handle_frame(frame))

    async def handle_frame(self, frame: str) -> None:
        """Handle one incoming frame (one or more commands)."""
        if self.state == "closed":
            return
        self.last_seen = time.monotonic()
        self.ping_sent = None  # any frame answers a ping
        try:
            for command in decode_commands(frame):  # decoded one by one: see decode_commands
                self.node.stats["commands_in"] += 1
                await self._handle(command)
                if self.state == "closed":
                    return
        except ProtocolError as e:
            log.info("client %s (%s): bad frame: %s", self.id, self.transport.remote, e)
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)

    def transport_closed(self) -> None:
        """The socket is gone (either side closed it)."""
        if self.state == "closed":
            return
        self.state = "closed"
        self._cleanup()

    # -- commands -----------------------------------------------------------------------------

    async def _handle(self, cmd: Command) -> None:
        # Every command counts, an empty one too: a frame of thousands of {} is a flood.
        if not self.rate.allow():
            self._limited += 1
            if self._limited > self.node.cfg.command_burst:
                self.disconnect(codes.TOO_MANY_REQUESTS_DISCONNECT)
            elif cmd.id:
                self._reply_error(cmd.id, codes.TOO_MANY_REQUESTS)
            return
        self._limited = 0
        if self.state != "connected" and cmd.method != "connect":
            log.info("client %s: %s before connect", self.id, cmd.method or "a command")
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)
            return
        if cmd.method is None:
            if cmd.id:  # an id and no request: nothing we know
                self._reply_error(cmd.id, codes.METHOD_NOT_FOUND)
            return  # an empty command is a pong
        if cmd.method == "send":
            await self._send(cmd.params)
            return
        if not cmd.id:
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)  # a request without an id
            return
        if cmd.method == "publish" and not self._publish_hooked(cmd):
            # Publishes run side by side: with an engine that waits for a network round trip,
            # a burst goes out in one pipeline (they are issued in order, so they keep it).
            run_eagerly(self._run_command(cmd))
            return
        await self._run_command(cmd)

    def _publish_hooked(self, cmd: Command) -> bool:
        # With a publish hook, answers come back in any order: keep the connection's
        # publications in order by handling them one after the other.
        channel = cmd.params.get("channel")
        ns = self.node.namespace(channel) if isinstance(channel, str) else None
        return bool(ns is not None and ns.publish_hook)

    async def _run_command(self, cmd: Command) -> None:
        assert cmd.method is not None
        handler = getattr(self, "_cmd_" + cmd.method, None)
        if handler is None:
            self._reply_error(cmd.id, codes.METHOD_NOT_FOUND)
            return
        try:
            result = await handler(cmd.params)
        except ErrorReply as e:
            self._reply_error(cmd.id, e.error)
            return
        except _Closed:
            return
        except DisconnectReply as e:
            self.disconnect(e.disconnect)
            return
        except BrokerUnavailable as e:
            log.info("client %s: %s: engine unavailable: %s", self.id, cmd.method, e)
            self.node.stats["broker_errors"] += 1
            self._reply_error(cmd.id, codes.INTERNAL)  # temporary: the SDK retries
            return
        except Exception:
            log.exception("client %s: %s failed", self.id, cmd.method)
            self._reply_error(cmd.id, codes.INTERNAL)
            return
        if result is not None and self.state != "closed":
            self.outbox.put(reply(cmd.id, cmd.method, result))
            if cmd.method in ("subscribe", "connect"):
                self._release_buffers()

    async def _cmd_connect(self, params: dict[str, Any]) -> dict[str, Any] | None:
        if self.state == "connected":
            raise ErrorReply(codes.BAD_REQUEST)
        token = params.get("token", "")
        if not isinstance(token, str):
            raise ErrorReply(codes.BAD_REQUEST)
        channels: list[str] = []
        connect_data: Any = None
        if token:
            creds = await self._verified(self.node.verifier.connection(token))
            self.user, self.conn_info, self.expire_at = creds.user, creds.info, creds.expire_at
            channels = creds.channels
        hook = self.node.cfg.hooks.connect
        if hook and self.node.hooks is not None:
            # The app decides (it may know the user from the session cookie, without a token).
            answer = await self.node.hooks.call(
                hook,
                "connect",
                {
                    "client": self.id,
                    "transport": "websocket",
                    "protocol": "json",
                    "user": self.user,
                    "authenticated": bool(token),
                    "data": params.get("data"),
                    "name": params.get("name", ""),
                    "version": params.get("version", ""),
                    "headers": self.http_headers,
                },
            )
            self._apply_connect_answer(answer)
            channels = _strings(answer.get("channels"), channels)
            connect_data = answer.get("data")
        elif not token and not self.node.allow_anonymous:
            raise ErrorReply(codes.UNAUTHORIZED)
        if self.state == "closed":
            raise _Closed()
        self.state = "connected"
        self._cancel(self._stale_timer)
        self._stale_timer = None
        self.node.client_connected(self)
        result: dict[str, Any] = {"client": self.id, "version": self.node.version}
        if self.expire_at is not None:
            result["expires"] = True
            result["ttl"] = ttl_seconds(self.expire_at)
            self._schedule_expiry()
        result["ping"] = int(self.node.cfg.ping_interval)
        result["pong"] = True
        if connect_data is not None:
            result["data"] = raw(connect_data)
        if channels:
            wanted = params.get("subs")
            if not isinstance(wanted, dict):
                wanted = {}
            subs = {}
            for channel in channels:
                try:
                    req = wanted.get(channel)
                    if not isinstance(req, dict):
                        req = {}
                    subs[channel] = await self._subscribe(channel, req, server_side=True)
                except ErrorReply as e:
                    log.info(
                        "client %s: server-side subscription to %s refused: %s",
                        self.id,
                        channel,
                        e.error.message,
                    )
            if subs:
                result["subs"] = subs
        return result

    def _apply_connect_answer(self, answer: dict[str, Any]) -> None:
        user = answer.get("user", self.user)
        if not isinstance(user, str):
            raise ErrorReply(codes.INTERNAL)
        self.user = user
        if "info" in answer:
            self.conn_info = raw(answer["info"])
        expire_at = answer.get("expire_at")
        if isinstance(expire_at, (int, float)) and not isinstance(expire_at, bool):
            self.expire_at = float(expire_at)

    async def _cmd_refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("token")
        if not isinstance(token, str) or not token:
            raise ErrorReply(codes.BAD_REQUEST)
        creds = await self._verified(self.node.verifier.connection(token))
        if creds.user != self.user:
            self.disconnect(codes.INVALID_TOKEN)  # a token for somebody else
            raise _Closed()
        self.expire_at = creds.expire_at
        if creds.info is not None:
            self.conn_info = creds.info
        result: dict[str, Any] = {"client": self.id, "version": self.node.version}
        self._cancel(self._expiry_timer)
        self._expiry_timer = None
        if self.expire_at is not None:
            result["expires"] = True
            result["ttl"] = ttl_seconds(self.expire_at)
            self._schedule_expiry()
        return result

    async def _cmd_subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ErrorReply(codes.BAD_REQUEST)
        return await self._subscribe(channel, params, server_side=False)

    async def _subscribe(
        self, channel: str, params: dict[str, Any], server_side: bool
    ) -> dict[str, Any]:
        node = self.node
        if len(channel) > node.cfg.max_channel_length:
            raise ErrorReply(codes.BAD_REQUEST)
        ns = node.namespace(channel)
        if ns is None:
            raise ErrorReply(codes.UNKNOWN_CHANNEL)
        if channel in self.subs:
            raise ErrorReply(codes.ALREADY_SUBSCRIBED)
        if len(self.subs) >= node.cfg.max_channels_per_client:
            raise ErrorReply(codes.LIMIT_EXCEEDED)
        expire_at = None
        chan_info = None
        subscribe_data: Any = None
        token = params.get("token", "")
        if not server_side and ns.subscribe_hook and node.hooks is not None:
            # The app's route handler is the policy for this namespace.
            answer = await node.hooks.call(
                ns.subscribe_hook,
                "subscribe",
                {
                    "client": self.id,
                    "user": self.user,
                    "channel": channel,
                    "data": params.get("data"),
                    "info": self.conn_info,
                },
            )
            if "info" in answer:
                chan_info = raw(answer["info"])
            subscribe_data = answer.get("data")
            if isinstance(answer.get("expire_at"), (int, float)):
                expire_at = float(answer["expire_at"])
        elif not server_side:
            if ns.private or token:
                if not isinstance(token, str) or not token:
                    raise ErrorReply(codes.PERMISSION_DENIED)
                grant = await self._verified(node.verifier.subscription(token))
                if grant.channel != channel or grant.user != self.user:
                    raise ErrorReply(codes.PERMISSION_DENIED)
                expire_at, chan_info = grant.expire_at, grant.info
            elif not ns.allow_subscribe:
                raise ErrorReply(codes.PERMISSION_DENIED)
        if self.state == "closed":
            raise _Closed()
        info = ClientInfo(self.user, self.id, self.conn_info, chan_info)
        recoverable = ns.force_recovery
        sub = _Subscription(channel, recoverable=recoverable, server_side=server_side, info=info)
        # Until the reply is out, the channel's messages wait in this buffer: a push for a
        # channel the client does not know yet would be dropped (or, worse, come first).
        sub.buffer = []
        self.subs[channel] = sub
        result: dict[str, Any] = {}
        try:
            await node.subscribe(channel, self.outbox, sub.buffer)
            if ns.presence:
                await node.presence.add(channel, info)
            if recoverable:
                result.update(await self._position_and_recovery(channel, params))
            if ns.join_leave:
                await node.broker.publish_join(channel, info)
        except BaseException:
            # Whatever failed (a refusal, the engine, a bug, a cancellation), a subscription
            # left registered would make every retry "already subscribed".
            await self._drop_subscription(channel, announce=False)
            raise
        if subscribe_data is not None:
            result["data"] = raw(subscribe_data)
        if expire_at is not None:
            sub.expire_at = expire_at
            result["expires"] = True
            result["ttl"] = ttl_seconds(expire_at)
            self._schedule_sub_expiry(sub)
        return result

    async def _position_and_recovery(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        """The stream position for a recoverable subscription, and what the client missed."""
        result: dict[str, Any] = {"recoverable": True}
        if params.get("recover"):
            result["was_recovering"] = True
            offset, epoch = params.get("offset", 0), params.get("epoch", "")
            if (
                not isinstance(offset, int)
                or isinstance(offset, bool)
                or not isinstance(epoch, str)
            ):
                raise ErrorReply(codes.BAD_REQUEST)
            try:
                pubs, top = await self.node.broker.history(
                    channel, StreamPosition(offset, epoch), limit=-1
                )
                result["recovered"] = True
                if pubs:
                    result["publications"] = [Raw(p.encoded()) for p in pubs]
            except Unrecoverable:
                # All or nothing: the client learns it cannot recover and reloads its state.
                _, top = await self.node.broker.history(channel, None, limit=0)
                result["recovered"] = False
        else:
            _, top = await self.node.broker.history(channel, None, limit=0)
        result["epoch"] = top.epoch
        if top.offset:
            result["offset"] = top.offset
        sub = self.subs.get(channel)
        if sub is not None:
            sub_top = top.offset
            # Publications that arrived while this was being read and are already in the
            # reply must not be sent twice: keep only later ones in the buffer.
            if sub.buffer is not None:
                sub.buffer[:] = [(o, m) for o, m in sub.buffer if o > sub_top or o == 0]
        return result

    def _release_buffers(self) -> None:
        """A subscribe (or connect) reply is queued: release what arrived meanwhile for its
        channels, then let them go live."""
        for channel, sub in self.subs.items():
            if sub.buffer is None:
                continue
            for _, message in sub.buffer:
                self.outbox.put(message)
            sub.buffer = None
            self.node.hub.go_live(channel, self.outbox)

    async def _cmd_unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not isinstance(channel, str):
            raise ErrorReply(codes.BAD_REQUEST)
        if channel in self.subs:
            await self._drop_subscription(channel, announce=True)
        return {}

    async def _cmd_sub_refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, token = params.get("channel"), params.get("token")
        if not isinstance(channel, str) or not isinstance(token, str) or not token:
            raise ErrorReply(codes.BAD_REQUEST)
        sub = self.subs.get(channel)
        if sub is None:
            raise ErrorReply(codes.PERMISSION_DENIED)
        grant = await self._verified(self.node.verifier.subscription(token))
        if grant.channel != channel or grant.user != self.user:
            raise ErrorReply(codes.PERMISSION_DENIED)
        self._cancel(sub.timer)
        sub.timer, sub.expire_at = None, grant.expire_at
        result: dict[str, Any] = {}
        if grant.expire_at is not None:
            result = {"expires": True, "ttl": ttl_seconds(grant.expire_at)}
            self._schedule_sub_expiry(sub)
        return result

    async def _cmd_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not isinstance(channel, str) or "data" not in params:
            raise ErrorReply(codes.BAD_REQUEST)
        ns = self.node.namespace(channel)
        if ns is None:
            raise ErrorReply(codes.UNKNOWN_CHANNEL)
        data = params["data"]
        if ns.publish_hook and self.node.hooks is not None:
            answer = await self.node.hooks.call(
                ns.publish_hook,
                "publish",
                {
                    "client": self.id,
                    "user": self.user,
                    "channel": channel,
                    "data": data,
                    "info": self.conn_info,
                },
            )
            data = answer.get("data", data)  # the app may replace what is published
        elif not ns.allow_publish or channel not in self.subs:
            raise ErrorReply(codes.PERMISSION_DENIED)
        info = ClientInfo(self.user, self.id, self.conn_info)
        await self.node.publish(channel, raw(data), info=info)
        return {}

    async def _cmd_presence(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_feature(params, "presence")
        members = await self.node.presence.get(channel)
        return {"presence": {cid: info.as_dict() for cid, info in members.items()}}

    async def _cmd_presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_feature(params, "presence")
        clients, users = await self.node.presence.stats(channel)
        return {"num_clients": clients, "num_users": users}

    async def _cmd_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_feature(params, "history")
        limit = params.get("limit", 0)
        reverse = bool(params.get("reverse", False))
        since_raw = params.get("since")
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ErrorReply(codes.BAD_REQUEST)
        since = None
        if isinstance(since_raw, dict):
            offset, epoch = since_raw.get("offset", 0), since_raw.get("epoch", "")
            if not isinstance(offset, int) or not isinstance(epoch, str):
                raise ErrorReply(codes.BAD_REQUEST)
            since = StreamPosition(offset, epoch)
        try:
            pubs, top = await self.node.broker.history(channel, since, limit, reverse)
        except Unrecoverable:
            raise ErrorReply(codes.UNRECOVERABLE_POSITION) from None
        result: dict[str, Any] = {"epoch": top.epoch}
        if top.offset:
            result["offset"] = top.offset
        if pubs:
            result["publications"] = [Raw(p.encoded()) for p in pubs]
        return result

    async def _cmd_rpc(self, params: dict[str, Any]) -> dict[str, Any]:
        method = params.get("method", "")
        if not isinstance(method, str):
            raise ErrorReply(codes.BAD_REQUEST)
        hook = self.node.cfg.hooks.rpc
        if hook and self.node.hooks is not None:
            answer = await self.node.hooks.call(
                hook,
                "rpc",
                {
                    "client": self.id,
                    "user": self.user,
                    "method": method,
                    "data": params.get("data"),
                    "info": self.conn_info,
                },
            )
            return {"data": raw(answer["data"])} if "data" in answer else {}
        handler = self.node.rpc_handler
        if handler is None:
            raise ErrorReply(codes.METHOD_NOT_FOUND)
        data = await handler(self, method, params.get("data"))
        return {"data": data} if data is not None else {}

    async def _cmd_ping(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _send(self, params: dict[str, Any]) -> None:
        handler = self.node.message_handler
        if handler is None:
            # The spec's answer to an asynchronous message nobody handles.
            self.disconnect(codes.NOT_AVAILABLE_DISCONNECT)
            return
        await handler(self, params.get("data"))

    def _channel_for_feature(self, params: dict[str, Any], feature: str) -> str:
        channel = params.get("channel")
        if not isinstance(channel, str):
            raise ErrorReply(codes.BAD_REQUEST)
        ns = self.node.namespace(channel)
        if ns is None:
            raise ErrorReply(codes.UNKNOWN_CHANNEL)
        enabled = (
            ns.presence if feature == "presence" else (ns.history_size > 0 and ns.history_ttl > 0)
        )
        if not enabled:
            raise ErrorReply(codes.NOT_AVAILABLE)
        allowed = ns.allow_presence if feature == "presence" else ns.allow_history
        if not allowed or channel not in self.subs:
            raise ErrorReply(codes.PERMISSION_DENIED)
        return channel

    async def _verified(self, verification: Awaitable[T]) -> T:
        """A token's claims; an expired token is error 109 (the SDK fetches a new one), any
        other problem disconnects with 3500 (terminal: a new token would not help)."""
        try:
            return await verification
        except TokenExpired:
            raise ErrorReply(codes.TOKEN_EXPIRED) from None
        except TokenInvalid as e:
            log.info("client %s (%s): invalid token: %s", self.id, self.transport.remote, e)
            self.disconnect(codes.INVALID_TOKEN)
            raise _Closed() from None

    # -- server-initiated ---------------------------------------------------------------------

    def ping(self) -> None:
        """Send a heartbeat ping (an empty reply); the client must send anything back."""
        if self.state == "connected":
            self.ping_sent = time.monotonic()
            self.outbox.put(PING)

    def push(self, message: bytes) -> None:
        """An already-encoded push (e.g. an async message from the server API)."""
        self.outbox.put(message)

    async def unsubscribe_by_server(self, channel: str, code: int, reason: str) -> None:
        if channel in self.subs:
            await self._drop_subscription(channel, announce=True)
            body = {"code": code, "reason": reason}
            self.outbox.put(
                b'{"push":{"channel":%s,"unsubscribe":%s}}' % (encode(channel), encode(body))
            )

    def disconnect(self, reason: Disconnect) -> None:
        """Tell the client why (a disconnect push) and close with that code."""
        if self.state == "closed":
            return
        self.state = "closed"
        if not self.outbox.closed:
            self.outbox.put(disconnect_push(reason.code, reason.reason, reason.reconnect))
            self.outbox.flush()
        self.transport.close_with(reason.code, reason.reason)
        self._cleanup()

    # -- internals ----------------------------------------------------------------------------

    def _reply_error(self, command_id: int, error: codes.Error) -> None:
        self.outbox.put(error_reply(command_id, error))

    def _stale(self) -> None:
        self._stale_timer = None
        if self.state == "connecting":
            self.disconnect(codes.STALE)

    def _slow(self) -> None:
        log.info(
            "client %s (%s): too slow, %d bytes queued",
            self.id,
            self.transport.remote,
            self.outbox.queued_bytes,
        )
        self.node.stats["slow_disconnects"] += 1
        self.disconnect(codes.SLOW)

    def _schedule_expiry(self) -> None:
        assert self.expire_at is not None
        delay = self.expire_at - time.time() + self.node.expired_close_delay
        self._expiry_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        if self.expire_at is not None and time.time() >= self.expire_at:
            self.disconnect(codes.EXPIRED_CONNECTION)

    def _schedule_sub_expiry(self, sub: _Subscription) -> None:
        assert sub.expire_at is not None
        delay = sub.expire_at - time.time() + self.node.expired_close_delay
        sub.timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: self.node.background(self._sub_expired(sub))
        )

    async def _sub_expired(self, sub: _Subscription) -> None:
        sub.timer = None
        if self.subs.get(sub.channel) is sub and sub.expire_at is not None:
            if time.time() >= sub.expire_at:
                await self.unsubscribe_by_server(sub.channel, *codes.UNSUBSCRIBE_EXPIRED)

    async def _drop_subscription(self, channel: str, announce: bool) -> None:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return
        self._cancel(sub.timer)
        ns = self.node.namespace(channel)
        await self.node.unsubscribe(channel, self.outbox)
        if ns is not None and ns.presence:
            await self.node.presence.remove(channel, self.id)
        if announce and ns is not None and ns.join_leave and sub.info is not None:
            await self.node.broker.publish_leave(channel, sub.info)

    def _cleanup(self) -> None:
        self._cancel(self._stale_timer)
        self._cancel(self._expiry_timer)
        self._stale_timer = self._expiry_timer = None
        self.outbox.close()
        channels = list(self.subs)
        for sub in self.subs.values():
            self._cancel(sub.timer)
        self.node.client_gone(self)
        if channels:
            self.node.background(self._leave_all(channels))

    async def _leave_all(self, channels: list[str]) -> None:
        for channel in channels:
            try:
                await self._drop_subscription(channel, announce=True)
            except Exception:
                log.exception("client %s: cleaning up %s failed", self.id, channel)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def _strings(value: Any, default: list[str]) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return default


def run_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` at once, in the caller's turn of the event loop, until it first waits.

    With the memory engine most commands never wait; handled in the turn their frame arrived,
    a burst of publications is fanned out together and leaves as one frame per subscriber
    (hub.py). Going through a Task instead costs an event-loop turn per frame, and a flush per
    frame: bench/fanout.py measured 0.43x of Node's ws at saturation that way.
    (Python 3.12's eager task factory does the same for every task.)
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coro, waiting_on))


async def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    # What asyncio's Task does: wait for the future the coroutine yielded, then send None
    # (the coroutine's own `await` then reads the future's result or raises its exception).
    while True:
        if waiting_on is None:
            await asyncio.sleep(0)  # a bare yield: give the loop one turn
        else:
            await asyncio.wait({waiting_on})
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return


class _Closed(Exception):
    """The connection was closed while handling a command: no reply."""


RpcHandler = Callable[[ClientSession, str, Any], Any]
MessageHandler = Callable[[ClientSession, Any], Any]
__all__ = ["ClientSession", "Publication", "RateLimiter"]
