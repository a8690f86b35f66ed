"""The node: ties the hub, the engine (broker, history, presence), auth and the clients.

It is the broker's event handler (publications from any process reach local subscribers
through :meth:`Node.handle_publication`), owns the heartbeat, and offers the operations of the
server API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gateway import __version__
from gateway.config import RealtimeConfig
from gateway.realtime import codes, fossil
from gateway.realtime.auth import TokenVerifier
from gateway.realtime.broker import Broker, HistoryOptions, PresenceManager, StreamPosition
from gateway.realtime.client import ClientSession
from gateway.realtime.codes import Disconnect
from gateway.realtime.context import SessionContext
from gateway.realtime.emulation import EmulationRouter
from gateway.realtime.hooks import HookCaller
from gateway.realtime.hub import Hub, Outbox
from gateway.realtime.policy import Namespaces
from gateway.realtime.protocol import (
    ClientInfo,
    Publication,
    Raw,
    channel_push_prefix,
    push,
)
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.realtime")

_USER_ACTION = "user_action"


class Node:
    """The hub and engine of one process; the :class:`SessionRegistry` of its sessions and the
    :class:`BrokerEventHandler` of its broker.

    Everything it works with is given to the constructor; sessions get the narrow
    :class:`SessionContext` it builds once, never the node itself.
    """

    def __init__(
        self,
        cfg: RealtimeConfig,
        verifier: TokenVerifier,
        broker: Broker,
        presence: PresenceManager,
        allow_anonymous: bool = False,
        hooks: HookCaller | None = None,
        on_publish: Callable[[float], None] | None = None,
        control_handlers: Mapping[str, Callable[[bytes], None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.broker = broker
        self.presence = presence
        self.version = __version__
        self.hub = Hub()
        self.namespaces = Namespaces(cfg, verifier, hooks)
        self.clients: dict[str, ClientSession] = {}
        self.users: dict[str, set[ClientSession]] = {}
        self.on_publish = on_publish
        """Told how long each publication took (metrics)."""
        self.control_handlers = dict(control_handlers or {})
        """Topic -> what this process does with a :meth:`control_all` message of that topic
        (app.py registers the proxy's cache purge: realtime/ knows nothing of it)."""
        self.stats: Counter[str] = Counter()
        self.started = time.monotonic()
        self.node_id = uuid.uuid4().hex
        """This process among those sharing the engine (emulation.py)."""
        # The server API's user-level actions reach every process (--workers, other hosts).
        self.control_handlers.setdefault(_USER_ACTION, self._user_action_from_elsewhere)
        self.emulation = EmulationRouter(
            self.node_id, broker, cfg.transports.emulation_timeout, self.stats
        )
        self.session_context = SessionContext(
            cfg=cfg,
            registry=self,
            hub=self.hub,
            verifier=verifier,
            broker=broker,
            presence=presence,
            namespaces=self.namespaces,
            hooks=hooks,
            allow_anonymous=allow_anonymous,
            version=self.version,
            stats=self.stats,
            node_id=self.node_id,
        )
        self._prefixes: dict[str, bytes] = {}
        self._delta_base: dict[str, bytes] = {}  # data of the last publication, delta channels
        self._positions: dict[str, tuple[int, str]] = {}  # last offset heard, per channel
        self._buckets: dict[int, set[ClientSession]] = {}
        self._pongs: deque[tuple[float, ClientSession, float]] = deque()
        self._ticker: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks("realtime node")
        broker.run(self)

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without waiting for it (its failure is logged)."""
        self._tasks.spawn(coro)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.broker.close()

    async def shutdown(self, reason: Disconnect, spread: float) -> None:
        """Disconnect every client, in groups evenly over ``spread`` seconds: they reconnect
        (with the SDK's jittered backoff) to another process without arriving all at once,
        and the event loop is never held by tens of thousands of closes in one turn."""
        clients = list(self.clients.values())
        if not clients:
            return
        steps = max(1, min(len(clients), int(spread / 0.02)))
        per_step = -(-len(clients) // steps)
        interval = spread / steps
        for start in range(0, len(clients), per_step):
            if start:
                await asyncio.sleep(interval)
            for client in clients[start : start + per_step]:
                client.disconnect(reason)

    # -- channels -----------------------------------------------------------------------------

    def history_options(self, channel: str) -> HistoryOptions | None:
        rules = self.namespaces.get(channel)
        return rules.history_options if rules is not None else None

    async def subscribe(
        self,
        channel: str,
        outbox: Outbox,
        buffer: list[tuple[int, bytes]] | None,
        delta: bool = False,
    ) -> None:
        if self.hub.add(channel, outbox, buffer, delta):
            await self.broker.subscribe(channel)

    async def unsubscribe(self, channel: str, outbox: Outbox) -> None:
        if self.hub.remove(channel, outbox):
            self._prefixes.pop(channel, None)
            self._positions.pop(channel, None)
            self._delta_base.pop(channel, None)
            await self.broker.unsubscribe(channel)

    async def publish(
        self,
        channel: str,
        data: Raw,
        info: ClientInfo | None = None,
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> StreamPosition | None:
        pub = Publication(data, info=info, tags=tags or {}, time=int(time.time() * 1000))
        started = time.perf_counter()
        position = await self.broker.publish(
            channel, pub, self.history_options(channel), idempotency_key
        )
        self.stats["publications"] += 1
        if self.on_publish is not None:
            self.on_publish(time.perf_counter() - started)
        return position

    # -- BrokerEventHandler: events for local subscribers -------------------------------------

    def handle_publication(self, channel: str, pub: Publication) -> None:
        if pub.offset:
            last = self._positions.get(channel)
            self._positions[channel] = (pub.offset, pub.epoch)
            if last is not None and (pub.epoch != last[1] or pub.offset != last[0] + 1):
                if pub.epoch == last[1] and pub.offset <= last[0]:
                    self._positions[channel] = last
                    return  # already delivered
                # Offsets jumped: something published in between never reached this process
                # (a broker hiccup). Subscribers recover it from history instead of missing it.
                log.warning("gap in %s: offset %d after %d", channel, pub.offset, last[0])
                self.stats["insufficient_state"] += 1
                self.resync(channel)
                return
        prefix = self._prefixes.get(channel)
        if prefix is None:
            prefix = self._prefixes[channel] = channel_push_prefix(channel)
        if self.hub.has_delta(channel):
            delivered = self._broadcast_delta(channel, prefix, pub)
        else:
            # Encoded once, the same bytes for every subscriber (hub.py).
            delivered = self.hub.broadcast(channel, prefix + pub.encoded() + b"}}", pub.offset)
        self.stats["messages_out"] += delivered

    def _broadcast_delta(self, channel: str, prefix: bytes, pub: Publication) -> int:
        """A channel some subscribers of which negotiated fossil deltas: one delta per
        publication, against the previous one, which every such subscriber that holds a base
        received last (the hub delivers a channel's publications to each in order)."""
        data = pub.data_json()
        previous = self._delta_base.get(channel)
        self._delta_base[channel] = data
        delta = None
        rules = self.namespaces.get(channel)
        if previous is not None and rules is not None and rules.options.delta_publish:
            candidate = fossil.create(previous, data)
            if len(candidate) < len(data):  # else the whole data is no bigger
                delta = prefix + pub.encoded_as_delta(candidate) + b"}}"
                self.stats["delta_publications"] += 1
        return self.hub.broadcast_delta(
            channel,
            prefix + pub.encoded() + b"}}",
            prefix + pub.encoded_as_text() + b"}}",
            delta,
            pub.offset,
        )

    async def control_all(self, topic: str, payload: bytes) -> int:
        """Hand ``payload`` to the ``topic`` handler of every process sharing the engine, this
        one included; how many processes the engine reached. Raises BrokerUnavailable."""
        return await self.broker.control_all(b"a %s\n%s" % (topic.encode(), payload))

    def handle_control(self, message: bytes) -> None:
        """A control message from another process: ``a <topic>\n<payload>`` for every process
        (:meth:`control_all`), else one of emulation.py's."""
        if not message.startswith(b"a "):
            self.emulation.handle_control(message)
            return
        head, _, payload = message.partition(b"\n")
        topic = head[2:].decode("utf-8", "replace")
        handler = self.control_handlers.get(topic)
        if handler is None:
            log.warning("dropped a control message of unknown topic %r", topic)
            return
        try:
            handler(payload)
        except Exception:  # another process's message must not break this one's reader
            log.exception("control message of topic %r failed", topic)

    def begin_batch(self) -> None:
        """The broker delivers several events in a row: flush them together (hub.hold)."""
        self.hub.hold()

    def end_batch(self) -> None:
        self.hub.release()

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.hub.broadcast(channel, push(channel, "join", {"info": info.as_dict()}))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.hub.broadcast(channel, push(channel, "leave", {"info": info.as_dict()}))

    def resync(self, channel: str) -> None:
        """Make every local subscriber of ``channel`` recover from history: unsubscribe push
        2500 (insufficient state), the SDK subscribes again with its position; a server-side
        subscriber, which cannot, is disconnected with 3010 and recovers when it reconnects."""
        self._positions.pop(channel, None)
        for client in list(self.clients.values()):
            if channel in client.subs:
                self.background(
                    client.unsubscribe_by_server(channel, *codes.UNSUBSCRIBE_INSUFFICIENT)
                )

    def events_lost(self, channels: list[str]) -> None:
        """The broker could not hear these channels for a while (reconnected)."""
        for channel in channels:
            if self.history_options(channel) is not None:
                self.resync(channel)
            else:
                self._positions.pop(channel, None)

    # -- clients ------------------------------------------------------------------------------

    def client_connected(self, client: ClientSession) -> None:
        self.clients[client.id] = client
        if client.session_id:
            self.emulation.add(client.session_id, client)
        self.users.setdefault(client.user, set()).add(client)
        bucket = zlib.crc32(client.id.encode()) % max(1, int(self.cfg.ping_interval))
        self._buckets.setdefault(bucket, set()).add(client)
        self.stats["connections"] += 1

    def client_gone(self, client: ClientSession) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        if client.session_id:
            self.emulation.remove(client.session_id, client)
        sessions = self.users.get(client.user)
        if sessions is not None:
            sessions.discard(client)
            if not sessions:
                del self.users[client.user]
        for members in self._buckets.values():
            members.discard(client)

    def user_clients(self, user: str) -> list[ClientSession]:
        return list(self.users.get(user, ()))

    async def _tick(self) -> None:
        """Once a second: ping one bucket of clients (each client every ping_interval),
        disconnect those that left a ping unanswered, and sweep expired history."""
        second = 0
        while True:
            await asyncio.sleep(1.0)
            second += 1
            try:
                self._heartbeat(second)
                if second % 60 == 0:
                    self.broker.sweep()
            except Exception:
                log.exception("heartbeat failed")

    def _heartbeat(self, second: int) -> None:
        now = time.monotonic()
        while self._pongs and self._pongs[0][0] <= now:
            _, client, sent = self._pongs.popleft()
            if client.ping_sent == sent and client.state == "connected":
                log.info("client %s: no pong in %.0f s", client.id, self.cfg.pong_timeout)
                client.disconnect(codes.NO_PONG)
        bucket = self._buckets.get(second % max(1, int(self.cfg.ping_interval)), ())
        for client in bucket:
            client.ping()
            if client.ping_sent is not None:
                self._pongs.append((now + self.cfg.pong_timeout, client, client.ping_sent))

    # -- server API operations ----------------------------------------------------------------

    async def unsubscribe_user(self, channel: str, user: str, client_id: str = "") -> None:
        for client in self.user_clients(user):
            if not client_id or client.id == client_id:
                await client.unsubscribe_by_server(channel, *codes.UNSUBSCRIBE_SERVER)

    def disconnect_user(self, user: str, reason: Disconnect, client_id: str = "") -> int:
        targets = [c for c in self.user_clients(user) if not client_id or c.id == client_id]
        for client in targets:
            client.disconnect(reason)
        return len(targets)

    async def user_action_everywhere(
        self,
        user: str,
        client_id: str = "",
        disconnect: Disconnect | None = None,
        unsubscribe: str | None = None,
    ) -> None:
        """Disconnect ``user`` (or unsubscribe them from a channel) here at once, then in every
        other process sharing the engine: the server API lands on one worker of one host, the
        user's connections may be on any. Raises BrokerUnavailable when the others cannot be
        told (this process has acted: a retry is harmless)."""
        if disconnect is not None:
            self.disconnect_user(user, disconnect, client_id)
        if unsubscribe is not None:
            await self.unsubscribe_user(unsubscribe, user, client_id)
        action: dict[str, Any] = {"origin": self.node_id, "user": user, "client": client_id}
        if disconnect is not None:
            action["disconnect"] = [disconnect.code, disconnect.reason]
        if unsubscribe is not None:
            action["unsubscribe"] = unsubscribe
        await self.control_all(_USER_ACTION, json.dumps(action).encode())

    def _user_action_from_elsewhere(self, payload: bytes) -> None:
        action = json.loads(payload)
        if action["origin"] == self.node_id:
            return  # done already (acting again could close a client that just reconnected)
        user, client_id = str(action["user"]), str(action.get("client", ""))
        if "disconnect" in action:
            code, reason = action["disconnect"]
            self.disconnect_user(user, Disconnect(int(code), str(reason)), client_id)
        if "unsubscribe" in action:
            self.background(self.unsubscribe_user(str(action["unsubscribe"]), user, client_id))

    def channels(self) -> dict[str, int]:
        return {c: self.hub.subscriber_count(c) for c in self.hub.channels()}

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "num_clients": len(self.clients),
            "num_users": len(self.users),
            "num_channels": len(self.hub.channels()),
            "uptime": int(time.monotonic() - self.started),
            "num_subs": sum(len(c.subs) for c in self.clients.values()),
        }
