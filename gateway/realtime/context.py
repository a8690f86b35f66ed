"""What a session works with: the transport below it, the node that owns it, and the parts of
the realtime core it uses (:class:`SessionContext`, built once by the node). Declared here so
that the session, the channel operations and the node depend on this module and not on each
other.

Nothing here imports Tornado.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import RealtimeConfig
from gateway.realtime.auth import TokenVerifier
from gateway.realtime.broker import Broker, PresenceManager, StreamPosition
from gateway.realtime.hooks import HookCaller
from gateway.realtime.hub import FrameSink, Hub, Outbox
from gateway.realtime.policy import Namespaces
from gateway.realtime.protocol import ClientInfo, Raw


class Transport(FrameSink, Protocol):
    def close_with(self, code: int, reason: str) -> None:
        """Close the socket with this WebSocket close code and reason."""

    @property
    def remote(self) -> str:
        """The peer, for logs."""

    @property
    def name(self) -> str:
        """The transport's name in the protocol (``websocket``...), told to connect hooks."""

    @property
    def emulation(self) -> bool:
        """Client-to-server commands arrive apart from the stream (emulation POSTs): the
        session gets a session id and tells the client its node."""

    @property
    def unidirectional(self) -> bool:
        """Pushes only: the client sends nothing after its connect request (no pongs)."""


class SessionRegistry(Protocol):
    """What a session needs from the node that owns it (implemented by node.Node); ``session``
    is the ClientSession itself."""

    def client_connected(self, session: Any) -> None:
        """The session is connected: count it, heartbeat it, find it by user."""

    def client_gone(self, session: Any) -> None:
        """The session is closed: forget it."""

    async def subscribe(
        self,
        channel: str,
        outbox: Outbox,
        buffer: list[tuple[int, bytes]] | None,
        delta: bool = False,
    ) -> None:
        """Deliver the channel's messages to ``outbox`` (into ``buffer`` until it goes live;
        as fossil deltas with ``delta``)."""

    async def unsubscribe(self, channel: str, outbox: Outbox) -> None:
        """Stop delivering the channel's messages to ``outbox``."""

    async def publish(
        self, channel: str, data: Raw, info: ClientInfo | None = None
    ) -> StreamPosition | None:
        """Publish to every subscriber, in every process."""

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` without waiting for it; its failure is logged."""


@dataclass(frozen=True)
class SessionContext:
    """The parts a session works with, built once by the node and shared by its sessions."""

    cfg: RealtimeConfig
    registry: SessionRegistry
    hub: Hub
    verifier: TokenVerifier
    broker: Broker
    presence: PresenceManager
    namespaces: Namespaces
    hooks: HookCaller | None
    allow_anonymous: bool
    version: str
    stats: Counter[str]
    node_id: str = ""
    """This process among those sharing the engine: emulation POSTs are routed to it."""
