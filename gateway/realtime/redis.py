"""The Redis engine: fan-out, history and presence shared by every gateway process and host.

Layout, per channel, on the shard its name hashes to (jump consistent hash over the URLs):

- ``<prefix>:h:<channel>``   history: a list of publications, newest last, trimmed to the size
- ``<prefix>:m:<channel>``   stream meta: hash with ``s`` (top offset) and ``e`` (epoch)
- ``<prefix>:p:<channel>``   pub/sub channel: every event for the channel
- ``<prefix>:pr:<channel>``  presence: hash client id -> ClientInfo JSON
- ``<prefix>:pe:<channel>``  presence expiry: sorted set client id -> expiry time
- ``<prefix>:i:<channel>:<key>`` idempotency: the first publication's position, 5 minutes
- ``<prefix>:c:<node id>``  pub/sub channel of one process: control messages to it (an
  emulation POST that reached another process, forwarded to the one holding the session)
- ``<prefix>:c:all``  pub/sub channel every process subscribes: control messages to all of
  them (a purge of the proxy's micro-cache); node ids are hex, never ``all``

Publishing with history is one Lua script: the offset is allocated, the publication stored and
the pub/sub message sent atomically, so pub/sub order is offset order and a reader that sees
offset N+2 after N knows it missed N+1 (gap detection, in the node).

A pub/sub message is ``<kind> <offset> <epoch>\\n<body>``: kind ``p`` (publication; body is the
Publication JSON without its offset), ``j`` / ``l`` (join / leave; body is the ClientInfo JSON).

One subscription per channel per process (the hub counts local subscribers), one pub/sub
connection per shard. When it fails the engine reports ``down``, publishes fail at once with a
temporary error, and a task reconnects with capped exponential backoff and full jitter,
subscribes every channel again, and tells the node that what pub/sub carried meanwhile may be
lost (the node makes subscribers of channels with history recover). Neither the pub/sub
connection nor publishes are retried by redis-py (see _Shard): a silent reconnection would hide
lost events, a retried publish could be published twice.

Limits: presence of a process that died disappears after ``presence_ttl`` (entries are refreshed
every third of it); several URLs are shards, not replicas: a shard that is down takes its
channels with it. Redis Cluster or sharded pub/sub (SSUBSCRIBE) is the next step beyond that.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import zlib
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from gateway.realtime import jsonsafe
from gateway.realtime.broker import (
    BrokerEventHandler,
    BrokerUnavailable,
    HistoryOptions,
    StreamPosition,
    Unrecoverable,
)
from gateway.realtime.protocol import ClientInfo, Publication, Raw, raw
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.redis")

IDEMPOTENCY_TTL = 300
_MAX_BATCH = 1000  # events delivered between two flushes, at most
# Seconds between two pub/sub reconnection attempts, at most. Every second down refuses
# publishes and subscribes: the chaos soak saw a 3 s shard outage keep a worker down 8 s more
# with a 10 s cap. A process trying every 2 s at most costs Redis nothing.
_RECONNECT_CAP = 2.0
META_TTL = 7 * 24 * 3600  # a stream's position outlives its publications by a week

# KEYS: history list, meta hash, idempotency key ('' = none)
# ARGV: body, size, ttl seconds, pub/sub channel, new epoch, meta ttl, idempotency ttl
_PUBLISH = """
if KEYS[3] ~= '' then
  local seen = redis.call('get', KEYS[3])
  if seen then
    local sep = string.find(seen, ' ')
    return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 1}
  end
end
local offset = redis.call('hincrby', KEYS[2], 's', 1)
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('hset', KEYS[2], 'e', epoch)
end
redis.call('expire', KEYS[2], ARGV[6])
redis.call('rpush', KEYS[1], offset .. ' ' .. ARGV[1])
redis.call('ltrim', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('expire', KEYS[1], ARGV[3])
redis.call('publish', ARGV[4], 'p ' .. offset .. ' ' .. epoch .. '\\n' .. ARGV[1])
if KEYS[3] ~= '' then
  redis.call('set', KEYS[3], offset .. ' ' .. epoch, 'EX', ARGV[7])
end
return {offset, epoch, 0}
"""

# KEYS: meta hash; ARGV: new epoch, meta ttl. The top position, creating the stream if needed.
_POSITION = """
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('expire', KEYS[1], ARGV[2])
end
local offset = redis.call('hget', KEYS[1], 's')
return {tonumber(offset or '0'), epoch}
"""

# KEYS: presence hash, expiry zset; ARGV: now. Drops expired entries, returns the rest.
_PRESENCE = """
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for _, client in ipairs(expired) do
  redis.call('hdel', KEYS[1], client)
end
redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[1])
return redis.call('hgetall', KEYS[1])
"""


# redis-py's default ("auto") skips its check of pooled connections before use (one Redis
# closed after a restart is then found out by the command that fails on it); a publish is not
# retried (see _Shard), so the check must run. Redis Enterprise maintenance pushes are not used.
_NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach, 2014): few keys move when shards are added."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class _Shard:
    def __init__(self, url: str, index: int, engine: RedisEngine) -> None:
        self.url = url
        self.index = index
        self.engine = engine
        # Reads and idempotent writes (history, presence): a pooled connection may be one Redis
        # closed (it restarted), retry once or twice on a fresh connection before calling it a
        # failure.
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
            maint_notifications_config=_NO_MAINT_NOTIFICATIONS,
        )
        # The pub/sub connection has its own client, without retries: redis-py would reconnect
        # it and subscribe again by itself, and what was published in between would be missed
        # here without the node knowing (a channel that then stays quiet never shows the gap).
        # Every failure must reach _run, which makes the subscribers recover.
        self.pubsub_client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=_NO_MAINT_NOTIFICATIONS,
        )
        # Publishes have their own client, without retries either: a publish Redis ran but
        # answered too late (a stall, a cut connection) would be run again, under a new offset,
        # and every subscriber would receive it twice. It fails instead (error 100, temporary).
        self.publisher = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=_NO_MAINT_NOTIFICATIONS,
        )
        self.publish_script = self.client.register_script(_PUBLISH)
        self.position_script = self.client.register_script(_POSITION)
        self.presence_script = self.client.register_script(_PRESENCE)
        self._connected = asyncio.Event()  # `up`, awaitable (RedisEngine.ready)
        self.channels: dict[str, asyncio.Future[None]] = {}  # pub/sub channel -> subscribed
        self._batch: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending = False
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def up(self) -> bool:
        """The pub/sub connection is established (and every channel subscribed again)."""
        return self._connected.is_set()

    @up.setter
    def up(self, value: bool) -> None:
        if value:
            self._connected.set()
        else:
            self._connected.clear()

    async def wait_up(self) -> None:
        await self._connected.wait()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self.pubsub_client.aclose()
        await self.publisher.aclose()
        await self.client.aclose()

    async def subscribe(self, channel: str) -> None:
        future = self.channels.get(channel)
        if future is None:
            future = self.channels[channel] = asyncio.get_running_loop().create_future()
            if self.up and self._pubsub is not None:
                try:
                    await self._pubsub.subscribe(channel)
                except (RedisError, OSError) as e:
                    self._connection_failed(e)
        if not future.done():
            # Confirmed by the reader; if the connection is down, this waits for the
            # reconnection to subscribe again (bounded, so a client's subscribe fails clearly).
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout=5.0)
            except TimeoutError:
                raise BrokerUnavailable(
                    f"redis shard {self.index} did not confirm the subscription"
                ) from None

    async def unsubscribe(self, channel: str) -> None:
        future = self.channels.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()
        if self.up and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(channel)
            except (RedisError, OSError) as e:
                self._connection_failed(e)

    def batched(self, kind: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue a publish; everything queued in one loop turn goes in one pipeline, and one
        pipeline at a time: one round trip for a burst of publishes, in order (a connection's
        publications to a channel keep their order, whichever pooled connection sends them)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((kind, keys, args, future))
        if not self._sending and len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._send_batch)
        return future

    def _send_batch(self) -> None:
        if self._sending or not self._batch:
            return
        batch, self._batch = self._batch, []
        self._sending = True
        self.engine.background(self._send(batch))

    async def _send(
        self, batch: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            # `async with`: a pipeline whose script check (SCRIPT EXISTS, before the batch) fails
            # keeps the connection it took; only reset() gives it back (else the connection
            # leaks and asyncio logs "Unclosed Pipeline client" when it is collected).
            async with self.publisher.pipeline(transaction=False) as pipe:
                for kind, keys, args, _ in batch:
                    if kind == "script":
                        await self.publish_script(keys=keys, args=args, client=pipe)
                    else:
                        pipe.publish(keys[0], args[0])
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as e:
            results = [e] * len(batch)
        finally:
            self._sending = False
        for (_, _, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._batch:
            self._send_batch()

    def _connection_failed(self, error: Exception) -> None:
        """The pub/sub connection failed: reconnect (and report down until then)."""
        self.engine.errors += 1
        if self.up:
            log.warning(
                "redis shard %d (%s) failed: %s", self.index, self.engine.redacted(self.url), error
            )
        self.up = False
        self._wake.set()

    def command_failed(self, error: Exception) -> BrokerUnavailable:
        """A command failed after its retries. Whether Redis is down is for the pub/sub
        connection to find out (it reads all the time); this request fails, temporarily."""
        self.engine.errors += 1
        log.warning("redis shard %d: %s", self.index, error)
        return BrokerUnavailable(str(error))

    async def _run(self) -> None:
        """Keep a pub/sub connection: connect, subscribe everything, read; on failure, back off
        and start again."""
        failures = 0
        while True:
            try:
                self._pubsub = self.pubsub_client.pubsub()
                await self._pubsub.ping()  # connects, or raises
                channels = list(self.channels)
                if channels:
                    await self._pubsub.subscribe(*channels)
                was_down = self.engine.ever_connected.get(self.index, False)
                self.up = True
                self.engine.ever_connected[self.index] = True
                failures = 0
                log.info(
                    "redis shard %d connected (%s)", self.index, self.engine.redacted(self.url)
                )
                if was_down:
                    # What was published while we could not hear it may be lost for our
                    # subscribers: let them recover from history.
                    self.engine.lost_events([c for c in channels])
                await self._read()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self._connection_failed(e)
            except Exception as e:  # a bug must not end the engine: log, reconnect
                log.exception("redis shard %d: unexpected error", self.index)
                self._connection_failed(e)
            finally:
                self.up = False
                if self._pubsub is not None:
                    try:
                        await self._pubsub.aclose()
                    except (RedisError, OSError) as e:  # closing a broken connection
                        log.debug("closing pub/sub: %s", e)
                    self._pubsub = None
            failures += 1
            delay = random.uniform(0, min(_RECONNECT_CAP, 0.2 * 2 ** min(failures, 10)))  # noqa: S311
            await asyncio.sleep(delay)

    async def _read(self) -> None:
        pubsub = self._pubsub
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            if message is None:
                if self._wake.is_set():
                    self._wake.clear()
                    if not self.up:
                        raise ConnectionError("connection marked failed")
                continue
            # Drain what else has already arrived before the hub flushes: under load a burst
            # of publications then leaves as one frame per subscriber, as with the memory
            # engine (bench/workers.py: one message per flush cost 8x the throughput).
            self.engine.begin_batch()
            try:
                self._handle(message)
                for _ in range(_MAX_BATCH):
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=0)
                    if message is None:
                        break
                    self._handle(message)
            finally:
                self.engine.end_batch()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if message.get("channel") is None:  # the pong to our connection check
            return
        channel = message["channel"].decode()
        if kind == b"message" or kind == "message":
            self.engine.deliver(channel, message["data"])
        elif kind in (b"subscribe", "subscribe"):
            future = self.channels.get(channel)
            if future is not None and not future.done():
                future.set_result(None)


class RedisEngine:
    """Broker and PresenceManager over one or more Redis servers (see the module docstring)."""

    def __init__(self, urls: list[str], prefix: str = "gw", presence_ttl: float = 60.0) -> None:
        if not urls:
            raise ValueError("the Redis engine needs at least one URL")
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self._handler: BrokerEventHandler | None = None
        self.shards = [_Shard(url, i, self) for i, url in enumerate(urls)]
        self.ever_connected: dict[int, bool] = {}
        self.errors = 0  # connection and command failures, for the metrics
        self._presence_local: dict[tuple[str, str], ClientInfo] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks("redis engine")

    def background(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        # This process's control channel, subscribed with the first connection (and again
        # after every reconnection, like the others).
        for control in (self._key("c", handler.node_id), self._key("c", "all")):
            self.shard(control).channels[control] = asyncio.get_running_loop().create_future()
        for shard in self.shards:
            shard.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_presence())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        for shard in self.shards:
            await shard.close()

    @property
    def up(self) -> bool:
        return all(shard.up for shard in self.shards)

    async def ready(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.up:  # a shard may drop again while we wait for another
            down = next(shard for shard in self.shards if not shard.up)
            try:
                await asyncio.wait_for(down.wait_up(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
        return True

    def snapshot(self) -> dict[str, Any]:
        publications = self._key("p", "")
        return {
            "kind": "redis",
            "state": "up" if self.up else "down",
            "errors": self.errors,
            "shards": [
                {
                    "url": self.redacted(s.url),
                    "state": "up" if s.up else "down",
                    # Channels with local subscribers (not the control channels).
                    "channels": sum(c.startswith(publications) for c in s.channels),
                }
                for s in self.shards
            ],
        }

    def sweep(self) -> None:
        pass  # Redis expires history and presence keys itself

    def begin_batch(self) -> None:
        if self._handler is not None:
            self._handler.begin_batch()

    def end_batch(self) -> None:
        if self._handler is not None:
            self._handler.end_batch()

    def lost_events(self, pubsub_channels: list[str]) -> None:
        prefix = self._key("p", "")
        channels = [c[len(prefix) :] for c in pubsub_channels if c.startswith(prefix)]
        if self._handler is not None:
            self._handler.events_lost(channels)

    @staticmethod
    def redacted(url: str) -> str:
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return url

    # -- keys and shards ----------------------------------------------------------------------

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.prefix}:{kind}:{channel}"

    def shard(self, channel: str) -> _Shard:
        if len(self.shards) == 1:
            return self.shards[0]
        return self.shards[jump_hash(zlib.crc32(channel.encode()), len(self.shards))]

    def _available(self, channel: str) -> _Shard:
        shard = self.shard(channel)
        if not shard.up:
            raise BrokerUnavailable(f"redis shard {shard.index} is down")
        return shard

    # -- Broker -------------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self.shard(channel).subscribe(self._key("p", channel))

    async def unsubscribe(self, channel: str) -> None:
        await self.shard(channel).unsubscribe(self._key("p", channel))

    async def publish(
        self,
        channel: str,
        pub: Publication,
        history: HistoryOptions | None,
        idempotency_key: str | None = None,
    ) -> StreamPosition | None:
        shard = self._available(channel)
        body = pub.encoded()  # no offset yet: the script assigns it
        try:
            if history is not None and history.size > 0 and history.ttl > 0:
                idem = self._key("i", f"{channel}:{idempotency_key}") if idempotency_key else ""
                offset, epoch, _ = await shard.batched(
                    "script",
                    [self._key("h", channel), self._key("m", channel), idem],
                    [
                        body,
                        history.size,
                        max(1, int(history.ttl)),
                        self._key("p", channel),
                        secrets.token_urlsafe(6),
                        max(META_TTL, int(history.ttl)),
                        IDEMPOTENCY_TTL,
                    ],
                )
                return StreamPosition(
                    int(offset), epoch.decode() if isinstance(epoch, bytes) else epoch
                )
            if idempotency_key:
                fresh = await shard.publisher.set(
                    self._key("i", f"{channel}:{idempotency_key}"),
                    "0 -",
                    nx=True,
                    ex=IDEMPOTENCY_TTL,
                )
                if not fresh:
                    return None
            await shard.batched("publish", [self._key("p", channel)], [b"p 0 -\n" + body])
            return None
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None

    async def control(self, node: str, message: bytes) -> bool:
        key = self._key("c", node)
        shard = self._available(key)
        try:
            receivers = await shard.batched("publish", [key], [message])
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None
        return bool(receivers)

    async def control_all(self, message: bytes) -> int:
        key = self._key("c", "all")
        shard = self._available(key)
        try:
            receivers = await shard.batched("publish", [key], [message])
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None
        return int(receivers)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_event(channel, b"j 0 -\n" + info.encoded())

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_event(channel, b"l 0 -\n" + info.encoded())

    async def _publish_event(self, channel: str, message: bytes) -> None:
        shard = self.shard(channel)
        if not shard.up:
            return  # joins and leaves are best effort
        try:
            await shard.client.publish(self._key("p", channel), message)
        except (RedisError, OSError) as e:
            shard.command_failed(e)

    async def history(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool = False,
    ) -> tuple[list[Publication], StreamPosition]:
        shard = self._available(channel)
        try:
            top_offset, epoch = await shard.position_script(
                keys=[self._key("m", channel)], args=[secrets.token_urlsafe(6), META_TTL]
            )
            epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
            top = StreamPosition(int(top_offset), epoch)
            if limit == 0 and since is None:
                return [], top
            raw_items = await shard.client.lrange(self._key("h", channel), 0, -1)
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None
        pubs = [
            _wire_publication(item if isinstance(item, bytes) else item.encode())
            for item in raw_items
        ]
        # The list and the meta hash are read apart: keep what is at or below the top we report.
        pubs = [p for p in pubs if p.offset <= top.offset]
        if since is not None:
            if since.epoch != top.epoch or since.offset > top.offset:
                raise Unrecoverable(channel)
            first = pubs[0].offset if pubs else top.offset + 1
            if since.offset + 1 < first:
                raise Unrecoverable(channel)
            pubs = [p for p in pubs if p.offset > since.offset]
        if reverse:
            pubs.reverse()
        if limit >= 0:
            pubs = pubs[:limit]
        return pubs, top

    async def remove_history(self, channel: str) -> None:
        shard = self._available(channel)
        try:
            await shard.client.delete(self._key("h", channel))
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None

    # -- delivery from pub/sub ----------------------------------------------------------------

    def deliver(self, pubsub_channel: str, message: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if pubsub_channel.startswith(self._key("c", "")):
            handler.handle_control(message)
            return
        channel = pubsub_channel[len(self._key("p", "")) :]
        head, _, body = message.partition(b"\n")
        kind, offset, epoch = head.split(b" ", 2)
        if kind == b"p":
            pub = _wire_publication(offset + b" " + body)
            pub.epoch = epoch.decode()
            handler.handle_publication(channel, pub)
        elif kind in (b"j", b"l"):
            try:
                info = _wire_info(body)
            except ValueError as e:  # raised here, it would cost the pub/sub connection
                log.warning("redis: dropped a bad %s event in %s: %s", kind.decode(), channel, e)
                return
            if kind == b"j":
                handler.handle_join(channel, info)
            else:
                handler.handle_leave(channel, info)

    # -- PresenceManager ----------------------------------------------------------------------

    async def add(self, channel: str, info: ClientInfo) -> None:
        self._presence_local[(channel, info.client)] = info
        await self._presence_write(channel, info)

    async def _presence_write(self, channel: str, info: ClientInfo) -> None:
        shard = self.shard(channel)
        if not shard.up:
            return  # written again by the refresher once Redis is back
        try:
            async with shard.client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("pr", channel), info.client, info.encoded())
                pipe.zadd(self._key("pe", channel), {info.client: time.time() + self.presence_ttl})
                pipe.expire(self._key("pr", channel), int(self.presence_ttl * 2))
                pipe.expire(self._key("pe", channel), int(self.presence_ttl * 2))
                await pipe.execute()
        except (RedisError, OSError) as e:
            shard.command_failed(e)

    async def remove(self, channel: str, client_id: str) -> None:
        self._presence_local.pop((channel, client_id), None)
        shard = self.shard(channel)
        if not shard.up:
            return
        try:
            async with shard.client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("pr", channel), client_id)
                pipe.zrem(self._key("pe", channel), client_id)
                await pipe.execute()
        except (RedisError, OSError) as e:
            shard.command_failed(e)

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        shard = self._available(channel)
        try:
            flat = await shard.presence_script(
                keys=[self._key("pr", channel), self._key("pe", channel)], args=[time.time()]
            )
        except (RedisError, OSError) as e:
            raise shard.command_failed(e) from None
        members = {}
        for i in range(0, len(flat), 2):
            try:
                members[flat[i].decode()] = _wire_info(flat[i + 1])
            except ValueError as e:
                log.warning("redis: skipped a bad presence entry in %s: %s", channel, e)
        return members

    async def stats(self, channel: str) -> tuple[int, int]:
        members = await self.get(channel)
        return len(members), len({info.user for info in members.values()})

    async def _refresh_presence(self) -> None:
        """Refresh this process's presence entries a few times per TTL (one pipeline per shard);
        if this process dies, its entries expire within presence_ttl."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            by_shard: dict[int, list[tuple[str, ClientInfo]]] = {}
            for (channel, _), info in list(self._presence_local.items()):
                by_shard.setdefault(self.shard(channel).index, []).append((channel, info))
            expire_at = time.time() + self.presence_ttl
            for index, entries in by_shard.items():
                shard = self.shards[index]
                if not shard.up:
                    continue
                try:
                    async with shard.client.pipeline(transaction=False) as pipe:
                        for channel, info in entries:
                            pipe.hset(self._key("pr", channel), info.client, info.encoded())
                            pipe.zadd(self._key("pe", channel), {info.client: expire_at})
                            pipe.expire(self._key("pr", channel), int(self.presence_ttl * 2))
                            pipe.expire(self._key("pe", channel), int(self.presence_ttl * 2))
                        await pipe.execute()
                except (RedisError, OSError) as e:
                    shard.command_failed(e)


def _wire_publication(item: bytes) -> Publication:
    """``<offset> <Publication JSON without offset>`` -> a Publication already encoded."""
    offset_text, _, body = item.partition(b" ")
    offset = int(offset_text)
    pub = Publication(Raw(b"null"), offset=offset, from_wire=True)
    pub._json = body[:-1] + b',"offset":%d}' % offset if offset else body
    return pub


def _wire_info(body: bytes) -> ClientInfo:
    """A ClientInfo as ``ClientInfo.encoded()`` wrote it; JsonError (a ValueError) for anything
    else: another process wrote it, so it is decoded as strictly as client input."""
    data = jsonsafe.loads(body)
    if not isinstance(data, dict):
        raise jsonsafe.JsonError("client info must be an object")
    conn_info = data.get("conn_info")
    chan_info = data.get("chan_info")
    return ClientInfo(
        data.get("user", ""),
        data.get("client", ""),
        raw(conn_info) if conn_info is not None else None,
        raw(chan_info) if chan_info is not None else None,
    )
