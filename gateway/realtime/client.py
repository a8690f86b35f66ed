"""One connection's session: lifecycle and command dispatch.

The transport feeds it text frames (:meth:`ClientSession.feed`) and tells it when the socket
closed (:meth:`ClientSession.transport_closed`); the session answers through its
:class:`~gateway.realtime.hub.Outbox` and asks the transport to close with a code. Commands of a
connection are handled in order, one at a time (the transport does not read the next frame
before the last one is handled), so replies and pushes keep their order.

What is *not* here: parameter checks (commands.py: each command decoded once into a typed
request), who may do what (policy.py: one set of rules per namespace), a subscription's state,
buffer and recovery (subscription.py), hook payloads (hooks.py), wire encoding (protocol.py).

States: ``connecting`` (socket open, no connect command yet: closed as stale after
``connect_timeout``) -> ``connected`` -> ``closed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.realtime import codes, commands, operations
from gateway.realtime.auth import ttl_seconds
from gateway.realtime.broker import (
    BrokerUnavailable,
)
from gateway.realtime.codes import Disconnect, DisconnectReply, ErrorReply
from gateway.realtime.commands import BadRequest, Caller, SubscribeRequest
from gateway.realtime.context import SessionContext, Transport
from gateway.realtime.flow import RateLimiter, run_eagerly
from gateway.realtime.hooks import (
    ConnectAnswer,
    connect_payload,
)
from gateway.realtime.hub import Outbox
from gateway.realtime.policy import ChannelRules, verified
from gateway.realtime.protocol import (
    PING,
    ClientInfo,
    Command,
    ProtocolError,
    Raw,
    connect_push,
    decode_commands,
    disconnect_push,
    error_reply,
    raw,
    reply,
    unsubscribe_push,
)
from gateway.realtime.subscription import Subscription, position_and_recovery

log = logging.getLogger("gateway.realtime")


class ClientSession:
    def __init__(
        self, ctx: SessionContext, transport: Transport, http_headers: dict[str, str] | None = None
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.http_headers = http_headers or {}
        """Headers of the upgrade request that hooks may need (cookie, user-agent, origin)."""
        self.id = str(uuid.uuid4())
        self.session_id = (
            uuid.uuid4().hex if transport.emulation or transport.unidirectional else ""
        )
        """For emulated and unidirectional transports: what emulation POSTs name the session
        by (secret to the client: unlike ``id``, it is never shown to other clients)."""
        self.user = ""
        self.conn_info: Raw | None = None
        self.state = "connecting"
        self.expire_at: float | None = None
        self.subs: dict[str, Subscription] = {}
        self.last_seen = time.monotonic()
        self.ping_sent: float | None = None
        self.rate = RateLimiter(ctx.cfg.command_rate, ctx.cfg.command_burst)
        self._limited = 0
        self._expiry_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._stale_timer: asyncio.TimerHandle | None = loop.call_later(
            ctx.cfg.connect_timeout, self._stale
        )
        self.outbox = Outbox(ctx.hub, transport, ctx.cfg.write_queue_max_bytes, self._slow)
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "connect": lambda p: self._connect(commands.parse_connect(p)),
            "refresh": lambda p: self._refresh(commands.parse_refresh(p)),
            "subscribe": lambda p: self._subscribe_command(
                commands.parse_subscribe(p, ctx.cfg.max_channel_length)
            ),
            "sub_refresh": lambda p: self._sub_refresh(commands.parse_sub_refresh(p)),
            "unsubscribe": lambda p: self._unsubscribe(commands.parse_channel(p)),
            "publish": lambda p: self._publish(commands.parse_publish(p)),
            "presence": lambda p: self._presence(commands.parse_channel(p)),
            "presence_stats": lambda p: self._presence_stats(commands.parse_channel(p)),
            "history": lambda p: self._history(commands.parse_history(p)),
            "rpc": lambda p: self._rpc(commands.parse_rpc(p)),
            "ping": self._ping,
        }

    @property
    def caller(self) -> Caller:
        return Caller(self.id, self.user, self.conn_info)

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
                self.ctx.stats["commands_in"] += 1
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

    # -- dispatch -----------------------------------------------------------------------------

    async def _handle(self, cmd: Command) -> None:
        # Every command counts, an empty one too: a frame of thousands of {} is a flood.
        if not self.rate.allow():
            self._limited += 1
            if self._limited > self.ctx.cfg.command_burst:
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
            await self._guarded(self._send(commands.parse_send(cmd.params)))
            return
        if not cmd.id:
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)  # a request without an id
            return
        if cmd.method == "publish" and not self._ordered_publish(cmd):
            # Publishes run side by side: with an engine that waits for a network round trip,
            # a burst goes out in one pipeline (they are issued in order, so they keep it).
            run_eagerly(self._run_command(cmd))
            return
        await self._run_command(cmd)

    def _ordered_publish(self, cmd: Command) -> bool:
        channel = cmd.params.get("channel")
        rules = self.ctx.namespaces.get(channel) if isinstance(channel, str) else None
        return rules is not None and rules.ordered_publish

    async def _run_command(self, cmd: Command) -> None:
        assert cmd.method is not None
        handler = self._handlers.get(cmd.method)
        if handler is None:
            self._reply_error(cmd.id, codes.METHOD_NOT_FOUND)
            return
        try:
            result = await handler(cmd.params)
        except BadRequest as e:
            log.info("client %s: %s: %s", self.id, cmd.method, e.detail)
            self._reply_error(cmd.id, codes.BAD_REQUEST)
            return
        except ErrorReply as e:
            self._reply_error(cmd.id, e.error)
            return
        except _Closed:
            return
        except DisconnectReply as e:
            self._disconnect_for(e)
            return
        except BrokerUnavailable as e:
            log.info("client %s: %s: engine unavailable: %s", self.id, cmd.method, e)
            self.ctx.stats["broker_errors"] += 1
            self._reply_error(cmd.id, codes.INTERNAL)  # temporary: the SDK retries
            return
        except Exception:
            log.exception("client %s: %s failed", self.id, cmd.method)
            self._reply_error(cmd.id, codes.INTERNAL)
            return
        if result is not None and self.state != "closed":
            self.outbox.put(reply(cmd.id, cmd.method, result))
            if cmd.method in ("subscribe", "connect"):
                for sub in self.subs.values():
                    sub.go_live(self.outbox, self.ctx.hub)

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run a command that has no reply (``send``): failures are logged, a disconnect
        answer closes the connection."""
        try:
            await work
        except DisconnectReply as e:
            self._disconnect_for(e)
        except (ErrorReply, BadRequest, BrokerUnavailable) as e:
            log.info("client %s: send refused: %s", self.id, e)
        except Exception:
            log.exception("client %s: send failed", self.id)

    def _disconnect_for(self, e: DisconnectReply) -> None:
        if e.detail:
            log.info("client %s (%s): %s", self.id, self.transport.remote, e.detail)
        self.disconnect(e.disconnect)

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self, req: commands.ConnectRequest) -> dict[str, Any]:
        if self.state == "connected":
            raise ErrorReply(codes.BAD_REQUEST)
        ctx = self.ctx
        channels: list[str] = []
        connect_data: Any = None
        if req.token:
            creds = await verified(ctx.verifier.connection(req.token))
            self.user, self.conn_info, self.expire_at = creds.user, creds.info, creds.expire_at
            channels = creds.channels
        path = ctx.cfg.hooks.connect
        if path and ctx.hooks is not None:
            # The app decides (it may know the user from the session cookie, without a token).
            payload = connect_payload(
                self.id, self.user, req, self.transport.name, self.http_headers
            )
            answer = ConnectAnswer.parse(await ctx.hooks.call(path, "connect", payload))
            if answer.user is not None:
                self.user = answer.user
            if answer.info is not None:
                self.conn_info = answer.info
            if answer.expire_at is not None:
                self.expire_at = answer.expire_at
            if answer.channels is not None:
                channels = answer.channels
            connect_data = answer.data
        elif not req.token and not ctx.allow_anonymous:
            raise ErrorReply(codes.UNAUTHORIZED)
        if self.state == "closed":
            raise _Closed()
        self.state = "connected"
        self._cancel(self._stale_timer)
        self._stale_timer = None
        ctx.registry.client_connected(self)
        result: dict[str, Any] = {"client": self.id, "version": ctx.version}
        if self.expire_at is not None:
            result["expires"] = True
            result["ttl"] = ttl_seconds(self.expire_at)
            self._schedule_expiry()
        result["ping"] = int(ctx.cfg.ping_interval)
        if not self.transport.unidirectional:
            result["pong"] = True
        if self.session_id:
            result["session"] = self.session_id
        if self.transport.emulation:
            result["node"] = ctx.node_id
        if connect_data is not None:
            result["data"] = raw(connect_data)
        subs = {}
        for channel in channels:
            sub_req = req.subs.get(channel) or SubscribeRequest(channel)
            try:
                rules = ctx.namespaces.require(channel)
                subs[channel] = await self._subscribe(rules, sub_req, server_side=True)
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

    async def connect_unidirectional(self, params: dict[str, Any]) -> None:
        """A unidirectional transport's connect: the request came with the HTTP request, the
        result goes out as a connect push, and a refusal closes the connection with the
        disconnect code Centrifugo gives it (unidirectional clients cannot read error replies).
        """
        try:
            if not self.rate.allow():
                raise DisconnectReply(codes.TOO_MANY_REQUESTS_DISCONNECT)
            result = await self._connect(commands.parse_connect(params))
        except BadRequest as e:
            log.info("client %s: unidirectional connect: %s", self.id, e.detail)
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)
            return
        except ErrorReply as e:
            self.disconnect(codes.UNIDIRECTIONAL_DISCONNECTS.get(e.error.code, codes.SERVER_ERROR))
            return
        except DisconnectReply as e:
            self._disconnect_for(e)
            return
        except _Closed:
            return
        except BrokerUnavailable as e:
            log.info("client %s: connect: engine unavailable: %s", self.id, e)
            self.disconnect(codes.SERVER_ERROR)
            return
        except Exception:
            log.exception("client %s: unidirectional connect failed", self.id)
            self.disconnect(codes.SERVER_ERROR)
            return
        if self.state != "closed":
            self.outbox.put(connect_push(result))
            for sub in self.subs.values():
                sub.go_live(self.outbox, self.ctx.hub)

    async def _refresh(self, req: commands.TokenRequest) -> dict[str, Any]:
        creds = await verified(self.ctx.verifier.connection(req.token))
        if creds.user != self.user:
            raise DisconnectReply(codes.INVALID_TOKEN, "refresh token for another user")
        self.expire_at = creds.expire_at
        if creds.info is not None:
            self.conn_info = creds.info
        result: dict[str, Any] = {"client": self.id, "version": self.ctx.version}
        self._cancel(self._expiry_timer)
        self._expiry_timer = None
        if self.expire_at is not None:
            result["expires"] = True
            result["ttl"] = ttl_seconds(self.expire_at)
            self._schedule_expiry()
        return result

    async def _ping(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    # -- subscriptions ------------------------------------------------------------------------

    async def _subscribe_command(self, req: SubscribeRequest) -> dict[str, Any]:
        return await self._subscribe(self.ctx.namespaces.require(req.channel), req)

    async def _subscribe(
        self, rules: ChannelRules, req: SubscribeRequest, server_side: bool = False
    ) -> dict[str, Any]:
        ctx, channel = self.ctx, req.channel
        if channel in self.subs:
            raise ErrorReply(codes.ALREADY_SUBSCRIBED)
        if len(self.subs) >= ctx.cfg.max_channels_per_client:
            raise ErrorReply(codes.LIMIT_EXCEEDED)
        grant = None if server_side else await rules.subscribe.authorize(self.caller, req)
        if self.state == "closed":
            raise _Closed()
        info = ClientInfo(self.user, self.id, self.conn_info, grant.info if grant else None)
        sub = Subscription(
            channel,
            info,
            server_side=server_side,
            recoverable=rules.options.force_recovery,
            delta=req.delta == "fossil" and rules.delta,
        )
        self.subs[channel] = sub
        result: dict[str, Any] = {"delta": True} if sub.delta else {}
        try:
            await ctx.registry.subscribe(channel, self.outbox, sub.buffer, sub.delta)
            if rules.options.presence:
                await ctx.presence.add(channel, info)
            if sub.recoverable:
                result.update(await position_and_recovery(ctx.broker, sub, req))
            if rules.options.join_leave:
                await ctx.broker.publish_join(channel, info)
        except BaseException:
            # Whatever failed (a refusal, the engine, a bug, a cancellation), a subscription
            # left registered would make every retry "already subscribed".
            await self._drop_subscription(channel, announce=False)
            raise
        if grant is not None and grant.data is not None:
            result["data"] = raw(grant.data)
        if grant is not None and grant.expire_at is not None:
            sub.expire_at = grant.expire_at
            result["expires"] = True
            result["ttl"] = ttl_seconds(grant.expire_at)
            self._schedule_sub_expiry(sub)
        return result

    async def _unsubscribe(self, req: commands.ChannelRequest) -> dict[str, Any]:
        if req.channel in self.subs:
            await self._drop_subscription(req.channel, announce=True)
        return {}

    async def _sub_refresh(self, req: commands.TokenRequest) -> dict[str, Any]:
        sub = self.subs.get(req.channel)
        if sub is None:
            raise ErrorReply(codes.PERMISSION_DENIED)
        grant = await verified(self.ctx.verifier.subscription(req.token))
        if grant.channel != req.channel or grant.user != self.user:
            raise ErrorReply(codes.PERMISSION_DENIED)
        sub.cancel_timer()
        sub.expire_at = grant.expire_at
        result: dict[str, Any] = {}
        if grant.expire_at is not None:
            result = {"expires": True, "ttl": ttl_seconds(grant.expire_at)}
            self._schedule_sub_expiry(sub)
        return result

    # -- channel operations -------------------------------------------------------------------

    async def _publish(self, req: commands.PublishRequest) -> dict[str, Any]:
        return await operations.publish(self.ctx, self.caller, req, req.channel in self.subs)

    async def _presence(self, req: commands.ChannelRequest) -> dict[str, Any]:
        return await operations.presence(self.ctx, self.caller, req, req.channel in self.subs)

    async def _presence_stats(self, req: commands.ChannelRequest) -> dict[str, Any]:
        subscribed = req.channel in self.subs
        return await operations.presence_stats(self.ctx, self.caller, req, subscribed)

    async def _history(self, req: commands.HistoryRequest) -> dict[str, Any]:
        return await operations.history(self.ctx, self.caller, req, req.channel in self.subs)

    async def _rpc(self, req: commands.RpcRequest) -> dict[str, Any]:
        return await operations.rpc(self.ctx, self.caller, req)

    async def _send(self, req: commands.SendRequest) -> None:
        if not await operations.send(self.ctx, self.caller, req):
            # The spec's answer to an asynchronous message nobody handles.
            self.disconnect(codes.NOT_AVAILABLE_DISCONNECT)

    # -- server-initiated ---------------------------------------------------------------------

    def ping(self) -> None:
        """Send a heartbeat ping (an empty reply); the client must send anything back, unless
        its transport is unidirectional (then the ping only keeps proxies from idling it out)."""
        if self.state == "connected":
            if not self.transport.unidirectional:
                self.ping_sent = time.monotonic()
            self.outbox.put(PING)

    async def unsubscribe_by_server(self, channel: str, code: int, reason: str) -> None:
        """Unsubscribe with an unsubscribe push (codes >= 2500: the SDK subscribes again)."""
        sub = self.subs.get(channel)
        if sub is None:
            return
        if sub.server_side and code >= 2500:
            # A server-side subscription cannot be subscribed again by the client (the SDK
            # drops it): make it reconnect instead, and recover with the connect's subs.
            self.disconnect(codes.INSUFFICIENT_STATE)
            return
        await self._drop_subscription(channel, announce=True)
        self.outbox.put(unsubscribe_push(channel, code, reason))

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
        self.ctx.stats["slow_disconnects"] += 1
        self.disconnect(codes.SLOW)

    def _schedule_expiry(self) -> None:
        assert self.expire_at is not None
        delay = self.expire_at - time.time() + self.ctx.cfg.expired_close_delay
        self._expiry_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        if self.expire_at is not None and time.time() >= self.expire_at:
            self.disconnect(codes.EXPIRED_CONNECTION)

    def _schedule_sub_expiry(self, sub: Subscription) -> None:
        assert sub.expire_at is not None
        delay = sub.expire_at - time.time() + self.ctx.cfg.expired_close_delay
        sub.timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: self.ctx.registry.background(self._sub_expired(sub))
        )

    async def _sub_expired(self, sub: Subscription) -> None:
        sub.timer = None
        if self.subs.get(sub.channel) is sub and sub.expire_at is not None:
            if time.time() >= sub.expire_at:
                await self.unsubscribe_by_server(sub.channel, *codes.UNSUBSCRIBE_EXPIRED)

    async def _drop_subscription(self, channel: str, announce: bool) -> None:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return
        sub.cancel_timer()
        ctx = self.ctx
        rules = ctx.namespaces.get(channel)
        await ctx.registry.unsubscribe(channel, self.outbox)
        if rules is not None and rules.options.presence:
            await ctx.presence.remove(channel, self.id)
        if announce and rules is not None and rules.options.join_leave:
            await ctx.broker.publish_leave(channel, sub.info)

    def _cleanup(self) -> None:
        self._cancel(self._stale_timer)
        self._cancel(self._expiry_timer)
        self._stale_timer = self._expiry_timer = None
        self.outbox.close()
        channels = list(self.subs)
        for sub in self.subs.values():
            sub.cancel_timer()
        self.ctx.registry.client_gone(self)
        if channels:
            self.ctx.registry.background(self._leave_all(channels))

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


class _Closed(Exception):
    """The connection was closed while handling a command: no reply."""


__all__ = ["ClientSession", "RateLimiter", "SessionContext"]
