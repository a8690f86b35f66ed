"""Engine behaviour every engine must have: offsets, epochs, history windows, all-or-nothing
recovery, idempotency, presence. One suite, parametrized by engine (the `engine` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.realtime.broker import (
    Broker,
    HistoryOptions,
    PresenceManager,
    StreamPosition,
    Unrecoverable,
)
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.protocol import ClientInfo, Publication, raw


class Handler:
    def __init__(self) -> None:
        self.pubs: list[tuple[str, int]] = []

    def handle_publication(self, channel: str, pub: Publication) -> None:
        self.pubs.append((channel, pub.offset))

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...


HISTORY = HistoryOptions(size=3, ttl=60)


@pytest.fixture(params=["memory"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[Broker, PresenceManager]]:
    """A fresh broker and presence manager of each engine."""
    if request.param == "memory":
        yield MemoryBroker(), MemoryPresence()


async def publish(broker: Broker, n: int, channel: str = "c") -> list[StreamPosition]:
    out = []
    for i in range(n):
        position = await broker.publish(channel, Publication(raw(i)), HISTORY)
        assert position is not None
        out.append(position)
    return out


@pytest.mark.gen_test
async def test_offsets_increase_within_one_epoch_and_reach_the_handler(
    engine: tuple[Broker, PresenceManager],
) -> None:
    broker, handler = engine[0], Handler()
    broker.run(handler)
    positions = await publish(broker, 4)
    assert [p.offset for p in positions] == [1, 2, 3, 4]
    assert len({p.epoch for p in positions}) == 1
    assert handler.pubs == [("c", 1), ("c", 2), ("c", 3), ("c", 4)]


@pytest.mark.gen_test
async def test_history_keeps_the_last_n_and_recovery_is_all_or_nothing(
    engine: tuple[Broker, PresenceManager],
) -> None:
    broker = engine[0]
    positions = await publish(broker, 5)  # size 3: offsets 3, 4, 5 kept
    epoch = positions[0].epoch
    pubs, top = await broker.history("c", None, -1)
    assert [p.offset for p in pubs] == [3, 4, 5] and top == StreamPosition(5, epoch)
    pubs, _ = await broker.history("c", StreamPosition(3, epoch), -1)
    assert [p.offset for p in pubs] == [4, 5]
    pubs, _ = await broker.history("c", StreamPosition(2, epoch), -1)  # 3.. is all there
    assert [p.offset for p in pubs] == [3, 4, 5]
    for gone in (
        StreamPosition(1, epoch),
        StreamPosition(0, epoch),
        StreamPosition(2, "other"),
        StreamPosition(9, epoch),
    ):
        with pytest.raises(Unrecoverable):
            await broker.history("c", gone, -1)


@pytest.mark.gen_test
async def test_limit_reverse_and_position_only(engine: tuple[Broker, PresenceManager]) -> None:
    broker = engine[0]
    await publish(broker, 3)
    pubs, top = await broker.history("c", None, 0)
    assert pubs == [] and top.offset == 3
    pubs, _ = await broker.history("c", None, 2, reverse=True)
    assert [p.offset for p in pubs] == [3, 2]


@pytest.mark.gen_test
async def test_idempotent_publish_is_not_repeated(engine: tuple[Broker, PresenceManager]) -> None:
    broker, handler = engine[0], Handler()
    broker.run(handler)
    first = await broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k")
    again = await broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k")
    other = await broker.publish("c", Publication(raw(1)), HISTORY, idempotency_key="k2")
    assert first == again and other is not None and other.offset == 2
    assert len(handler.pubs) == 2


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


@pytest.mark.gen_test
async def test_presence_counts_clients_and_users(engine: tuple[Broker, PresenceManager]) -> None:
    presence = engine[1]
    await presence.add("c", ClientInfo("alice", "1"))
    await presence.add("c", ClientInfo("alice", "2"))
    await presence.add("c", ClientInfo("bob", "3"))
    assert await presence.stats("c") == (3, 2)
    await presence.remove("c", "2")
    assert set(await presence.get("c")) == {"1", "3"}
