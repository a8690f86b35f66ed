"""Bidirectional emulation: a session's stream is one HTTP response (http_stream, SSE) and its
commands arrive as separate POSTs to the emulation endpoint, which may land on another worker
process or another host than the one holding the stream.

The connect reply of an emulated session carries ``session`` (a secret id) and ``node`` (the
process holding it); the SDK sends both with every POST. :class:`EmulationRouter` hands a POST
to the session when it is local, else forwards it to its node through the engine's control
channel (memory engine: this process only; Redis: ``<prefix>:c:<node id>``) and waits, at most
``timeout``, for that node to say it was handled.

Control messages (bytes, only ever written by gateway processes):

- ``e <request id> <from node>\\n<session id>\\n<commands>``: handle these commands;
- ``r <request id> <1|0>``: the answer (0: no such session there).

Nothing here imports Tornado.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections import Counter
from collections.abc import Awaitable
from typing import Protocol

from gateway.realtime.broker import Broker, BrokerUnavailable
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.realtime")

NODE_ID = re.compile(r"[0-9a-f]{32}")
SESSION_ID = NODE_ID  # both are uuid4().hex


class Outcome(enum.Enum):
    DONE = "done"  # the session took the commands (its replies go out on its stream)
    NO_SESSION = "no_session"  # no such session (closed, or never existed): 404
    TIMEOUT = "timeout"  # its node did not answer in time: 504
    UNAVAILABLE = "unavailable"  # the engine cannot be reached: 503


class EmulatedSession(Protocol):
    state: str

    def feed(self, frame: str) -> Awaitable[None] | None:
        """Handle a frame of commands (None when already done)."""


class EmulationRouter:
    def __init__(
        self, node_id: str, broker: Broker, timeout: float, stats: Counter[str] | None = None
    ) -> None:
        self.node_id = node_id
        self.broker = broker
        self.timeout = timeout
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.sessions: dict[str, EmulatedSession] = {}
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._next_request = 0
        self._tasks = BackgroundTasks("emulation")

    # -- local sessions -----------------------------------------------------------------------

    def add(self, session_id: str, session: EmulatedSession) -> None:
        self.sessions[session_id] = session

    def remove(self, session_id: str, session: EmulatedSession) -> None:
        if self.sessions.get(session_id) is session:
            del self.sessions[session_id]

    # -- a POST arrived here ------------------------------------------------------------------

    async def deliver(self, node: str, session_id: str, commands: str) -> Outcome:
        """Hand ``commands`` to session ``session_id`` of ``node``, wherever it lives."""
        if node == self.node_id:
            return await self._local(session_id, commands)
        if not NODE_ID.fullmatch(node) or not SESSION_ID.fullmatch(session_id):
            return Outcome.NO_SESSION  # not one of ours: nothing is sent to the engine
        self._next_request += 1
        request = self._next_request
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[request] = answer
        message = b"e %d %s\n%s\n%s" % (
            request,
            self.node_id.encode(),
            session_id.encode(),
            commands.encode("utf-8", "surrogatepass"),
        )
        try:
            if not await self.broker.control(node, message):
                return Outcome.NO_SESSION  # nobody listens there: that process is gone
            self.stats["emulation_forwarded"] += 1
            found = await asyncio.wait_for(answer, self.timeout)
        except BrokerUnavailable as e:
            log.info("emulation for node %s: engine unavailable: %s", node, e)
            return Outcome.UNAVAILABLE
        except TimeoutError:
            log.info("emulation for node %s: no answer in %.1f s", node, self.timeout)
            return Outcome.TIMEOUT
        finally:
            self._pending.pop(request, None)
        return Outcome.DONE if found else Outcome.NO_SESSION

    async def _local(self, session_id: str, commands: str) -> Outcome:
        session = self.sessions.get(session_id)
        if session is None or session.state == "closed":
            return Outcome.NO_SESSION
        pending = session.feed(commands)
        if pending is not None:
            await pending  # handled in order; its replies are on the stream
        return Outcome.DONE

    # -- a control message from another process ----------------------------------------------

    def handle_control(self, message: bytes) -> None:
        try:
            head, _, rest = message.partition(b"\n")
            kind, request_id, arg = head.split(b" ", 2)
            request = int(request_id)
            if kind == b"e":
                session_id, _, commands = rest.partition(b"\n")
                self._tasks.spawn(
                    self._answer(arg.decode(), request, session_id.decode(), commands.decode())
                )
            elif kind == b"r":
                answer = self._pending.get(request)
                if answer is not None and not answer.done():
                    answer.set_result(arg == b"1")
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("dropped a malformed control message: %s", e)

    async def _answer(self, origin: str, request: int, session_id: str, commands: str) -> None:
        outcome = await self._local(session_id, commands)
        self.stats["emulation_received"] += 1
        found = b"1" if outcome is Outcome.DONE else b"0"
        try:
            await self.broker.control(origin, b"r %d %s" % (request, found))
        except BrokerUnavailable as e:
            log.info("emulation answer to node %s lost: %s", origin, e)
