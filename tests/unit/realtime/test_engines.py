"""Engine behaviour every engine must have: offsets, epochs, history windows, all-or-nothing
recovery, idempotency, presence, delivery. One suite, run against the memory engine and
against Redis (127.0.0.1:6379, database 15, a fresh key prefix per test)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import pytest
from conftest import IN_CI, require
from support.redis import redis_available

from gateway.realtime.broker import (
    Broker,
    HistoryOptions,
    PresenceManager,
    StreamPosition,
    Unrecoverable,
)
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.protocol import ClientInfo, Publication, raw

ENGINES = ["memory", "redis", "redis-sharded"]
HISTORY = HistoryOptions(size=3, ttl=60)
REDIS_URL = "redis://127.0.0.1:6379/15"
SECOND_SHARD = "redis://127.0.0.1:6379/14"  # another database stands in for another server


class Handler:
    def __init__(self, node_id: str = "a" * 32) -> None:
        self.node_id = node_id
        self.controls: list[bytes] = []
        self.pubs: list[tuple[str, int, bytes]] = []
        self.joins: list[tuple[str, str]] = []
        self.lost: list[list[str]] = []

    def handle_publication(self, channel: str, pub: Publication) -> None:
        self.pubs.append((channel, pub.offset, pub.encoded()))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info.user))

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...

    def events_lost(self, channels: list[str]) -> None:
        self.lost.append(channels)

    def begin_batch(self) -> None: ...

    def end_batch(self) -> None: ...

    def handle_control(self, message: bytes) -> None:
        self.controls.append(message)


class Engine:
    def __init__(self, broker: Broker, presence: PresenceManager, handler: Handler) -> None:
        self.broker, self.presence, self.handler = broker, presence, handler

    async def stop(self) -> None:
        await self.broker.close()
        prefix = getattr(self.broker, "prefix", None)
        if prefix is not None:  # leave nothing behind in the machine's Redis
            from redis import asyncio as aioredis

            for url in (REDIS_URL, SECOND_SHARD):
                client = aioredis.Redis.from_url(url)
                keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)


async def start(kind: str) -> Engine:
    handler = Handler()
    if kind == "memory":
        broker = MemoryBroker()
        broker.run(handler)
        return Engine(broker, MemoryPresence(), handler)
    require(redis_available(), "Redis on 127.0.0.1:6379")
    from gateway.realtime.redis import RedisEngine

    urls = [REDIS_URL] if kind == "redis" else [REDIS_URL, SECOND_SHARD]
    engine = RedisEngine(urls, prefix=f"test-{secrets.token_hex(4)}", presence_ttl=3)
    engine.run(handler)
    deadline = time.monotonic() + 5
    while not engine.up:
        assert time.monotonic() < deadline, "Redis did not connect"
        await asyncio.sleep(0.02)
    return Engine(engine, engine, handler)


async def publish(broker: Broker, n: int, channel: str = "c") -> list[StreamPosition]:
    out = []
    for i in range(n):
        position = await broker.publish(channel, Publication(raw({"i": i})), HISTORY)
        assert position is not None
        out.append(position)
    return out


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_offsets_increase_within_one_epoch_and_reach_subscribers_in_order(kind: str) -> None:
    e = await start(kind)
    try:
        await e.broker.subscribe("c")
        positions = await publish(e.broker, 4)
        assert [p.offset for p in positions] == [1, 2, 3, 4]
        assert len({p.epoch for p in positions}) == 1
        await e.until(lambda: len(e.handler.pubs) == 4)
        assert [(c, o) for c, o, _ in e.handler.pubs] == [("c", 1), ("c", 2), ("c", 3), ("c", 4)]
        assert b'"offset":2' in e.handler.pubs[1][2] and b'{"i":1}' in e.handler.pubs[1][2]
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_history_keeps_the_last_n_and_recovery_is_all_or_nothing(kind: str) -> None:
    e = await start(kind)
    try:
        positions = await publish(e.broker, 5)  # size 3: offsets 3, 4, 5 kept
        epoch = positions[0].epoch
        pubs, top = await e.broker.history("c", None, -1)
        assert [p.offset for p in pubs] == [3, 4, 5] and top == StreamPosition(5, epoch)
        pubs, _ = await e.broker.history("c", StreamPosition(3, epoch), -1)
        assert [p.offset for p in pubs] == [4, 5]
        pubs, _ = await e.broker.history("c", StreamPosition(2, epoch), -1)
        assert [p.offset for p in pubs] == [3, 4, 5]
        for gone in (
            StreamPosition(1, epoch),
            StreamPosition(0, epoch),
            StreamPosition(2, "other"),
            StreamPosition(9, epoch),
        ):
            with pytest.raises(Unrecoverable):
                await e.broker.history("c", gone, -1)
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_limit_reverse_and_position_only(kind: str) -> None:
    e = await start(kind)
    try:
        await publish(e.broker, 3)
        pubs, top = await e.broker.history("c", None, 0)
        assert pubs == [] and top.offset == 3
        pubs, _ = await e.broker.history("c", None, 2, reverse=True)
        assert [p.offset for p in pubs] == [3, 2]
        empty, fresh = await e.broker.history("never-published", None, -1)
        assert empty == [] and fresh.offset == 0 and fresh.epoch
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_idempotent_publish_is_not_repeated(kind: str) -> None:
    e = await start(kind)
    try:
        await e.broker.subscribe("c")
        first = await e.broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k")
        again = await e.broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k")
        other = await e.broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k2")
        assert first == again and other is not None and other.offset == 2
        await e.until(lambda: len(e.handler.pubs) == 2)
        await asyncio.sleep(0.1)
        assert len(e.handler.pubs) == 2
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_publications_without_history_and_joins_are_delivered(kind: str) -> None:
    e = await start(kind)
    try:
        await e.broker.subscribe("plain")
        assert await e.broker.publish("plain", Publication(raw("x")), None) is None
        await e.broker.publish_join("plain", ClientInfo("alice", "c1"))
        await e.until(lambda: len(e.handler.pubs) == 1 and len(e.handler.joins) == 1)
        assert e.handler.pubs[0][1] == 0 and e.handler.joins == [("plain", "alice")]
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_presence_counts_clients_and_users(kind: str) -> None:
    e = await start(kind)
    try:
        await e.presence.add("c", ClientInfo("alice", "1", raw({"n": 1})))
        await e.presence.add("c", ClientInfo("alice", "2"))
        await e.presence.add("c", ClientInfo("bob", "3"))
        assert await e.presence.stats("c") == (3, 2)
        await e.presence.remove("c", "2")
        members = await e.presence.get("c")
        assert set(members) == {"1", "3"} and members["1"].conn_info == raw({"n": 1})
    finally:
        await e.stop()


@pytest.mark.gen_test
async def test_memory_stream_past_its_ttl_starts_a_new_epoch() -> None:
    broker = MemoryBroker()
    now = [1000.0]
    broker._now = lambda: now[0]  # type: ignore[method-assign]
    (first,) = await publish(broker, 1)
    now[0] += 61
    (second,) = await publish(broker, 1)
    assert second.epoch != first.epoch and second.offset == 1
    with pytest.raises(Unrecoverable):
        await broker.history("c", first, -1)


def test_suite_runs_on_redis_in_ci() -> None:
    if IN_CI:
        assert redis_available(), "CI must have Redis on 127.0.0.1:6379"


def test_jump_hash_spreads_channels_and_moves_few_when_a_shard_is_added() -> None:
    import zlib

    from gateway.realtime.redis import jump_hash

    keys = [zlib.crc32(f"chat:{i}".encode()) for i in range(10000)]
    three = [jump_hash(k, 3) for k in keys]
    assert all(abs(three.count(b) - 3333) < 300 for b in range(3))
    four = [jump_hash(k, 4) for k in keys]
    moved = sum(a != b for a, b in zip(three, four, strict=True))
    assert 2000 < moved < 3000  # about a quarter move, all to the new shard
    assert all(b == 3 for a, b in zip(three, four, strict=True) if a != b)


@pytest.mark.gen_test
async def test_sharded_engine_puts_each_channel_on_one_shard() -> None:
    e = await start("redis-sharded")
    try:
        from gateway.realtime.redis import RedisEngine

        engine = e.broker
        assert isinstance(engine, RedisEngine)
        channels = [f"c{i}" for i in range(20)]
        assert {engine.shard(c).index for c in channels} == {0, 1}
        for channel in channels:
            await engine.publish(channel, Publication(raw(1)), HISTORY)
        from redis import asyncio as aioredis

        for shard_url, index in ((REDIS_URL, 0), (SECOND_SHARD, 1)):
            client = aioredis.Redis.from_url(shard_url)
            stored = {
                k.decode().split(":h:")[1]
                async for k in client.scan_iter(match=f"{engine.prefix}:h:*")
            }
            await client.aclose()
            assert stored == {c for c in channels if engine.shard(c).index == index}
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_control_messages_reach_the_named_process_only(kind: str) -> None:
    """Broker.control: a message for a node id reaches that process's handler; for an id no
    process listens on, control says False (the emulation endpoint answers 404 on it)."""
    e = await start(kind)
    try:
        assert await e.broker.control(e.handler.node_id, b"e 1 x\nhello") is True
        await e.until(lambda: e.handler.controls == [b"e 1 x\nhello"])
        assert await e.broker.control("f" * 32, b"lost") is False
        await asyncio.sleep(0.1)
        assert e.handler.controls == [b"e 1 x\nhello"]
        assert e.handler.pubs == [] and e.handler.lost == []
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.gen_test
async def test_control_all_reaches_this_process_too(kind: str) -> None:
    """Broker.control_all: the message reaches every process's handler, this one included,
    and says how many processes it reached (one here)."""
    e = await start(kind)
    try:
        deadline = time.monotonic() + 5
        while not await e.broker.control_all(b"a topic\nx"):  # subscribed with the connection
            assert time.monotonic() < deadline, "the all-processes channel was never heard"
            await asyncio.sleep(0.05)
        await e.until(lambda: b"a topic\nx" in e.handler.controls)
        assert await e.broker.control_all(b"a topic\ny") == 1
        await e.until(lambda: e.handler.controls[-1:] == [b"a topic\ny"])
        assert e.handler.pubs == [] and e.handler.lost == []
    finally:
        await e.stop()


@pytest.mark.parametrize("kind", ["redis", "redis-sharded"])
@pytest.mark.gen_test
async def test_control_all_crosses_redis_engines(kind: str) -> None:
    """Two processes on one Redis: a control_all from either reaches both, and a message to
    one node still reaches that one only."""
    first = await start(kind)
    from gateway.realtime.redis import RedisEngine

    assert isinstance(first.broker, RedisEngine)
    other_handler = Handler(node_id="c" * 32)
    urls = [s.url for s in first.broker.shards]
    other = RedisEngine(urls, prefix=first.broker.prefix, presence_ttl=3)
    other.run(other_handler)
    try:
        assert await other.ready(5.0)
        deadline = time.monotonic() + 5
        while await first.broker.control_all(b"a t\n0") < 2:
            assert time.monotonic() < deadline, "the other process never listened"
            await asyncio.sleep(0.05)
        assert await other.control_all(b"a t\n1") == 2
        await first.until(lambda: other_handler.controls[-1:] == [b"a t\n1"])
        await first.until(lambda: first.handler.controls[-1:] == [b"a t\n1"])
        assert await first.broker.control(other_handler.node_id, b"r 9 1") is True
        await first.until(lambda: other_handler.controls[-1:] == [b"r 9 1"])
        assert b"r 9 1" not in first.handler.controls
    finally:
        await other.close()
        await first.stop()


@pytest.mark.gen_test
async def test_control_messages_cross_redis_engines() -> None:
    """Two processes (engines) on one Redis: each hears its own control channel only."""
    first = await start("redis")
    from gateway.realtime.redis import RedisEngine

    assert isinstance(first.broker, RedisEngine)
    other_handler = Handler(node_id="c" * 32)
    other = RedisEngine([REDIS_URL], prefix=first.broker.prefix, presence_ttl=3)
    other.run(other_handler)
    try:
        assert await other.ready(5.0)
        # The control channel is subscribed along with the connection: wait for it.
        deadline = time.monotonic() + 5
        while not await first.broker.control(other_handler.node_id, b"r 7 1"):
            assert time.monotonic() < deadline, "the other process never listened"
            await asyncio.sleep(0.05)
        await first.until(lambda: other_handler.controls[-1:] == [b"r 7 1"])
        assert await other.control(first.handler.node_id, b"r 8 0") is True
        await first.until(lambda: first.handler.controls == [b"r 8 0"])
        assert first.handler.controls == [b"r 8 0"]
    finally:
        await other.close()
        await first.stop()
