"""One channel subscription of a connection: its state, its buffer, its recovery.

Life of a subscription: created (buffering: the channel's messages wait in
:attr:`Subscription.buffer` while the subscribe reply is prepared, because a push for a channel
the client does not know yet would be dropped, or worse, arrive before the reply) -> live (the
reply is queued, the buffer is released in order, the hub delivers directly) -> dropped.

Recovery (:func:`position_and_recovery`) is all or nothing, as Centrifugo's: every publication
after the client's position, or ``recovered: false`` (or error 112 when the client set the
"reject unrecovered" flag, so it reloads its state and subscribes again from the new position).

Nothing here imports Tornado.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.realtime import codes
from gateway.realtime.broker import Broker, Unrecoverable
from gateway.realtime.codes import ErrorReply
from gateway.realtime.commands import SubscribeRequest
from gateway.realtime.hub import Hub, Outbox
from gateway.realtime.protocol import ClientInfo, Publication, Raw


@dataclass
class Subscription:
    channel: str
    info: ClientInfo
    server_side: bool = False
    """From the connection token's (or connect hook's) ``channels``: the client cannot
    subscribe again by itself, so a lost state means a reconnect (3010), not a resubscribe."""
    recoverable: bool = False
    delta: bool = False
    """Negotiated fossil deltas: every publication's data reaches it as a JSON string."""
    expire_at: float | None = None
    timer: asyncio.TimerHandle | None = None
    buffer: list[tuple[int, bytes]] | None = field(default_factory=list)
    """(offset, encoded push) received before the subscribe reply went out; None once live."""

    def keep_after(self, offset: int) -> None:
        """Messages up to ``offset`` are in the reply already (recovered publications)."""
        if self.buffer is not None:
            self.buffer[:] = [(o, m) for o, m in self.buffer if o > offset or o == 0]

    def go_live(self, outbox: Outbox, hub: Hub) -> None:
        """The subscribe reply is queued: release what waited, then deliver directly."""
        if self.buffer is None:
            return
        for _, message in self.buffer:
            outbox.put(message)
        self.buffer = None
        hub.go_live(self.channel, outbox)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def position_and_recovery(
    broker: Broker, sub: Subscription, req: SubscribeRequest
) -> dict[str, Any]:
    """The stream position for a recoverable subscription, and what the client missed."""
    result: dict[str, Any] = {"recoverable": True}
    if req.recover and req.since is not None:
        result["was_recovering"] = True
        try:
            pubs, top = await broker.history(sub.channel, req.since, limit=-1)
            result["recovered"] = True
            if pubs:
                # A delta subscription gets them whole, as text: the SDK decodes every
                # publication of such a subscription, the first one included.
                encode = Publication.encoded_as_text if sub.delta else Publication.encoded
                result["publications"] = [Raw(encode(p)) for p in pubs]
        except Unrecoverable:
            if req.reject_unrecovered:
                # The client asked for 112 rather than a gap: it reloads its state (getState)
                # and subscribes again from the position it then has.
                raise ErrorReply(codes.UNRECOVERABLE_POSITION) from None
            _, top = await broker.history(sub.channel, None, limit=0)
            result["recovered"] = False
    else:
        _, top = await broker.history(sub.channel, None, limit=0)
    result["epoch"] = top.epoch
    if top.offset:
        result["offset"] = top.offset
    sub.keep_after(top.offset)
    return result
