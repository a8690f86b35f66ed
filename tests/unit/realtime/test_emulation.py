"""Emulation routing (emulation.py) over the memory engine, and the stream framings of the
HTTP transports (http_transports.py): no sockets."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from gateway.realtime.emulation import EmulationRouter, Outcome
from gateway.realtime.http_transports import event_stream, ndjson, unwrap_pushes
from gateway.realtime.memory import MemoryBroker

NODE = "a" * 32
SESSION = "b" * 32


class Session:
    """A session as the router sees it: it takes frames of commands."""

    def __init__(self, delay: float = 0.0) -> None:
        self.state = "connected"
        self.frames: list[str] = []
        self.delay = delay

    def feed(self, frame: str) -> asyncio.Future[None] | None:
        self.frames.append(frame)
        if not self.delay:
            return None
        return asyncio.ensure_future(asyncio.sleep(self.delay))


class Handler:
    node_id = NODE

    def __init__(self) -> None:
        self.router: EmulationRouter | None = None

    def handle_control(self, message: bytes) -> None:
        assert self.router is not None
        self.router.handle_control(message)


def router(timeout: float = 1.0) -> EmulationRouter:
    broker = MemoryBroker()
    handler = Handler()
    broker.run(handler)  # type: ignore[arg-type]
    handler.router = EmulationRouter(NODE, broker, timeout, Counter())
    return handler.router


@pytest.mark.gen_test
async def test_local_session_takes_the_commands_in_order() -> None:
    r = router()
    session = Session(delay=0.01)
    r.add(SESSION, session)
    outcomes = [await r.deliver(NODE, SESSION, f'{{"id":{i}}}') for i in range(3)]
    assert outcomes == [Outcome.DONE] * 3
    assert session.frames == ['{"id":0}', '{"id":1}', '{"id":2}']


@pytest.mark.gen_test
async def test_gone_unknown_and_closed_sessions() -> None:
    r = router()
    session = Session()
    r.add(SESSION, session)
    assert await r.deliver(NODE, "c" * 32, "{}") is Outcome.NO_SESSION
    session.state = "closed"
    assert await r.deliver(NODE, SESSION, "{}") is Outcome.NO_SESSION
    r.remove(SESSION, session)
    assert SESSION not in r.sessions
    # Another node on the memory engine: there is none (one process), at once.
    assert await r.deliver("d" * 32, SESSION, "{}") is Outcome.NO_SESSION
    # Not even shaped like a node or session id: nothing is sent to the engine.
    assert await r.deliver("../x", SESSION, "{}") is Outcome.NO_SESSION
    assert await r.deliver("d" * 32, "s\nx", "{}") is Outcome.NO_SESSION
    assert r.stats["emulation_forwarded"] == 0


@pytest.mark.gen_test
async def test_a_forwarded_request_is_answered_through_the_control_channel() -> None:
    """The wire protocol between processes, end to end over one engine: a request to this
    node's control channel is handled and answered (the answer resolves the waiting POST)."""
    r = router()
    session = Session()
    r.add(SESSION, session)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    r._pending[41] = answer
    r.handle_control(b"e 41 " + NODE.encode() + b"\n" + SESSION.encode() + b'\n{"id":1}\n{"id":2}')
    assert await asyncio.wait_for(answer, 1) is True
    assert session.frames == ['{"id":1}\n{"id":2}']  # the commands' newlines survive
    assert r.stats["emulation_received"] == 1


@pytest.mark.parametrize(
    "message", [b"", b"x", b"e notanumber n\ns\nd", b"z 1 2", b"e 1", b"r", b"\xff\xfe 1 2"]
)
def test_malformed_control_messages_are_dropped(
    message: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    r = EmulationRouter(NODE, MemoryBroker(), 1.0)
    with caplog.at_level(logging.WARNING):
        r.handle_control(message)
    assert "malformed control message" in caplog.text


def test_an_answer_nobody_waits_for_is_ignored() -> None:
    r = EmulationRouter(NODE, MemoryBroker(), 1.0)
    r.handle_control(b"r 99 1")  # timed out already: nothing to resolve, no error
    assert r._pending == {}


def test_framings() -> None:
    batch = b'{"id":1,"connect":{}}\n{"push":{"channel":"c","pub":{"data":1}}}'
    assert ndjson(batch) == batch + b"\n"
    assert event_stream(batch) == (
        b'data: {"id":1,"connect":{}}\ndata: {"push":{"channel":"c","pub":{"data":1}}}\n\n'
    )
    # Unidirectional: pushes unwrapped, pings kept, replies dropped.
    assert unwrap_pushes(b'{"push":{"connect":{"client":"x"}}}') == b'{"connect":{"client":"x"}}'
    assert unwrap_pushes(b"{}") == b"{}"
    assert unwrap_pushes(b'{"id":3,"publish":{}}') == b""
    assert unwrap_pushes(batch + b"\n{}") == b'{"channel":"c","pub":{"data":1}}\n{}'
