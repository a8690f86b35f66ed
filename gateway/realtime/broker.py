"""What an engine provides: a Broker (fan-out between processes, with history) and a
PresenceManager. Two implementations: memory.py (one process) and redis.py.

The broker calls back into the node through :class:`BrokerEventHandler`, so that a publication
reaches local subscribers the same way whichever process published it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.realtime.protocol import ClientInfo, Publication


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """The top of a channel's history stream: last offset within an epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """Keep the last ``size`` publications for ``ttl`` seconds after the last one."""

    size: int
    ttl: float


class BrokerUnavailable(Exception):
    """The engine cannot be reached right now; the caller may retry (a temporary error)."""


class Unrecoverable(Exception):
    """The requested position is not in the stream (another epoch, or evicted)."""


class BrokerEventHandler(Protocol):
    def handle_publication(self, channel: str, pub: Publication) -> None:
        """A publication for local subscribers (``pub.offset`` set when it has history)."""

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        """Someone subscribed to ``channel`` (on any process)."""

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        """Someone unsubscribed from ``channel`` (on any process)."""

    def events_lost(self, channels: list[str]) -> None:
        """Events of these channels may have been missed (the broker reconnected): local
        subscribers must recover them from history."""

    def begin_batch(self) -> None:
        """Several events follow in a row (a broker draining what it read): deliver them
        together; :meth:`end_batch` follows."""

    def end_batch(self) -> None:
        """The batch begun by :meth:`begin_batch` is over."""

    @property
    def node_id(self) -> str:
        """This process's id among the processes sharing the engine (control messages)."""

    def handle_control(self, message: bytes) -> None:
        """A control message :meth:`Broker.control` sent to this process, or
        :meth:`Broker.control_all` to every process."""


class Broker(Protocol):
    def run(self, handler: BrokerEventHandler) -> None:
        """Start delivering events to ``handler``."""

    async def ready(self, timeout: float) -> bool:
        """Wait until the engine can serve (a Redis engine: connected to every shard), at
        most ``timeout`` seconds; whether it can. A process that is about to accept clients
        awaits it first, so that it does not refuse their publishes while it connects."""

    async def subscribe(self, channel: str) -> None:
        """This process now has subscribers in ``channel``: receive its events."""

    async def unsubscribe(self, channel: str) -> None:
        """This process has no subscribers left in ``channel``."""

    async def publish(
        self,
        channel: str,
        pub: Publication,
        history: HistoryOptions | None,
        idempotency_key: str | None = None,
    ) -> StreamPosition | None:
        """Publish to every process; with ``history``, store it first and give it an offset.

        Returns the position (None without history). A repeated ``idempotency_key`` within
        5 minutes is not published again; the first publication's position is returned.
        """

    async def control(self, node: str, message: bytes) -> bool:
        """Send ``message`` to the process whose node id is ``node`` (its handler's
        :meth:`~BrokerEventHandler.handle_control`). False when no process listens under that
        id (it is gone); raises :class:`BrokerUnavailable` when the engine cannot be reached.
        Nothing is stored: a message to a process that is not listening is lost."""

    async def control_all(self, message: bytes) -> int:
        """Send ``message`` to every process sharing the engine, this one included (each
        handler's :meth:`~BrokerEventHandler.handle_control`); how many processes it reached
        (memory engine: this one). Raises :class:`BrokerUnavailable` when the engine cannot be
        reached. Nothing is stored: a process that is not listening right now misses it."""

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Tell every process's subscribers that ``info`` joined."""

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell every process's subscribers that ``info`` left."""

    async def history(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool = False,
    ) -> tuple[list[Publication], StreamPosition]:
        """Publications after ``since`` (or from the start), at most ``limit`` (-1: all,
        0: none, only the position). Raises :class:`Unrecoverable` when ``since`` is not in
        the stream: another epoch, or publications after it were evicted."""

    async def remove_history(self, channel: str) -> None:
        """Forget the channel's publications (its position stays)."""

    def sweep(self) -> None:
        """Called every minute: drop what expired (an engine whose store expires entries by
        itself does nothing)."""

    def snapshot(self) -> dict[str, Any]:
        """``{"kind": ..., "state": "up"|"down", ...}`` for /_gateway/ready."""

    async def close(self) -> None:
        """Release resources."""


class PresenceManager(Protocol):
    async def add(self, channel: str, info: ClientInfo) -> None:
        """``info.client`` is subscribed to ``channel``."""

    async def remove(self, channel: str, client_id: str) -> None:
        """``client_id`` is no longer subscribed to ``channel``."""

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        """Everyone subscribed, by client id."""

    async def stats(self, channel: str) -> tuple[int, int]:
        """(number of clients, number of distinct users)."""
