"""The error and disconnect code catalogue of the Centrifugo client protocol v2.

Numbers, messages and the ``temporary`` flag are exactly those of centrifugal.dev,
"Client protocol codes" (server/codes.md). The centrifuge SDK acts on them: a temporary error
is retried, 109 makes it fetch a new token, a disconnect code below 3500 makes it reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Error:
    """An error in a reply to a command."""

    code: int
    message: str
    temporary: bool = False

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.temporary:
            out["temporary"] = True
        return out


class ErrorReply(Exception):
    """Raised while handling a command; becomes ``{"id": n, "error": {...}}``."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


INTERNAL = Error(100, "internal server error", temporary=True)
UNAUTHORIZED = Error(101, "unauthorized")
UNKNOWN_CHANNEL = Error(102, "unknown channel")
PERMISSION_DENIED = Error(103, "permission denied")
METHOD_NOT_FOUND = Error(104, "method not found")
ALREADY_SUBSCRIBED = Error(105, "already subscribed")
LIMIT_EXCEEDED = Error(106, "limit exceeded")
BAD_REQUEST = Error(107, "bad request")
NOT_AVAILABLE = Error(108, "not available")
TOKEN_EXPIRED = Error(109, "token expired")
EXPIRED = Error(110, "expired")
TOO_MANY_REQUESTS = Error(111, "too many requests", temporary=True)
UNRECOVERABLE_POSITION = Error(112, "unrecoverable position")


@dataclass(frozen=True)
class Disconnect:
    """Why the server closes a connection: sent as the WebSocket close code and reason."""

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        # The SDK's rule: 3500-3999 and 4500-4999 are terminal, everything else reconnects.
        return not (3500 <= self.code < 4000 or 4500 <= self.code < 5000)


class DisconnectReply(Exception):
    """Raised while handling a command: close the connection with this disconnect."""

    def __init__(self, disconnect: Disconnect, detail: str = "") -> None:
        super().__init__(detail or disconnect.reason)
        self.disconnect = disconnect
        self.detail = detail
        """Why, for the log (never sent to the client)."""


CONNECTION_CLOSED = Disconnect(3000, "connection closed")
SHUTDOWN = Disconnect(3001, "shutdown")
SERVER_ERROR = Disconnect(3004, "internal server error")
EXPIRED_CONNECTION = Disconnect(3005, "connection expired")
SUB_EXPIRED = Disconnect(3006, "subscription expired")
SLOW = Disconnect(3008, "slow")
WRITE_ERROR = Disconnect(3009, "write error")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
FORCE_RECONNECT = Disconnect(3011, "force reconnect")
NO_PONG = Disconnect(3012, "no pong")
TOO_MANY_REQUESTS_DISCONNECT = Disconnect(3013, "too many requests")
STATE_INVALIDATED = Disconnect(3014, "state invalidated")
INVALID_TOKEN = Disconnect(3500, "invalid token")
BAD_REQUEST_DISCONNECT = Disconnect(3501, "bad request")
STALE = Disconnect(3502, "stale")
FORCE_NO_RECONNECT = Disconnect(3503, "force disconnect")
CONNECTION_LIMIT = Disconnect(3504, "connection limit")
CHANNEL_LIMIT = Disconnect(3505, "channel limit")
INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
PERMISSION_DENIED_DISCONNECT = Disconnect(3507, "permission denied")
NOT_AVAILABLE_DISCONNECT = Disconnect(3508, "not available")
TOO_MANY_ERRORS = Disconnect(3509, "too many errors")

# Unsubscribe push codes: >= 2500 make the SDK resubscribe.
UNSUBSCRIBE_SERVER = (2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT = (2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = (2501, "subscription expired")


UNIDIRECTIONAL_DISCONNECTS: dict[int, Disconnect] = {
    # How a refused connect reaches a unidirectional client, which reads no error replies
    # (Centrifugo's defaults; other errors: 3004). Unauthorized is told as an invalid token,
    # not as a server error, so that a bare EventSource's user sees why.
    EXPIRED.code: EXPIRED_CONNECTION,
    TOKEN_EXPIRED.code: EXPIRED_CONNECTION,
    TOO_MANY_REQUESTS.code: TOO_MANY_REQUESTS_DISCONNECT,
    PERMISSION_DENIED.code: PERMISSION_DENIED_DISCONNECT,
    UNAUTHORIZED.code: INVALID_TOKEN,
}
