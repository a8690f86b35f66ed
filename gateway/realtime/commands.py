"""Typed requests: every command's parameters, decoded and validated once, in one place.

The socket protocol (client commands), the server API and the proxy hooks' payloads all take
their parameters from here, so one rule holds everywhere: a boolean is never an integer, an
offset is a non-negative integer, a disconnect code is in 3000-4999, a channel is a non-empty
string no longer than the configured limit.

Each ``parse_*`` function takes the decoded JSON object of a command's params (or an API
body) and returns a frozen request, or raises :class:`BadRequest` naming the field. Callers
map it to their answer: error 107 on the socket and in the API.

Nothing here does I/O or knows Tornado.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.realtime.broker import StreamPosition
from gateway.realtime.codes import Disconnect, Error
from gateway.realtime.protocol import Raw


@dataclass(frozen=True, slots=True)
class Caller:
    """The connection a command comes from, as policies and hooks see it."""

    client: str
    user: str
    info: Raw | None = None

    @property
    def anonymous(self) -> bool:
        return not self.user


# SubscribeRequest.flag bits (centrifuge-js subscriptionFlags).
FLAG_CHANNEL_COMPACTION = 1
FLAG_REJECT_UNRECOVERED = 2
"""The client (its ``getState`` option) wants error 112 instead of ``recovered: false``, so it
can reload its state and subscribe from the new position."""

_MISSING: Any = object()


class BadRequest(Exception):
    """A parameter is missing or has the wrong type: error 107, naming it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def error(self) -> Error:
        return Error(107, f"bad request: {self.detail}")


# -- field readers: the one set of rules ------------------------------------------------------


def string(params: dict[str, Any], key: str, default: str | None = None) -> str:
    """A string field; required when ``default`` is None."""
    value = params.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is None:
            raise BadRequest(f"{key} is required")
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def integer(params: dict[str, Any], key: str, default: int = 0, low: int | None = None) -> int:
    """An integer field (``true`` is not 1)."""
    value = params.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer")
    if low is not None and value < low:
        raise BadRequest(f"{key} must be at least {low}")
    return value


def boolean(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, _MISSING)
    if value is _MISSING or value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


def channel_name(params: dict[str, Any], key: str = "channel", max_length: int = 0) -> str:
    value = string(params, key)
    if not value:
        raise BadRequest(f"{key} is required")
    if max_length and len(value) > max_length:
        raise BadRequest(f"{key} is longer than {max_length} characters")
    return value


def position(params: dict[str, Any], key: str) -> StreamPosition | None:
    """``{"offset": n, "epoch": "..."}`` or absent."""
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{key} must be an object with offset and epoch")
    return StreamPosition(integer(value, "offset", low=0), string(value, "epoch", ""))


def string_map(params: dict[str, Any], key: str) -> dict[str, str]:
    value = params.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"{key} must map strings to strings")
    return value


def parse_disconnect(value: Any, default: Disconnect) -> Disconnect:
    """A disconnect ``{"code": 3000-4999, "reason": "..."}`` (server API, hook answers)."""
    if value is None:
        return default
    if not isinstance(value, dict):
        raise BadRequest("disconnect must be an object")
    code = integer(value, "code", default.code)
    reason = string(value, "reason", default.reason if code == default.code else "")
    if not 3000 <= code <= 4999:
        raise BadRequest("disconnect code must be in 3000-4999")
    return Disconnect(code, reason)


def data(params: dict[str, Any], key: str = "data", required: bool = False) -> Any:
    if required and key not in params:
        raise BadRequest(f"{key} is required")
    return params.get(key)


# -- client commands ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    channel: str
    token: str = ""
    recover: bool = False
    since: StreamPosition | None = None
    """The position to recover from (``offset``/``epoch`` with ``recover``)."""
    data: Any = None
    flag: int = 0
    delta: str = ""

    @property
    def reject_unrecovered(self) -> bool:
        return bool(self.flag & FLAG_REJECT_UNRECOVERED)


def parse_subscribe(params: dict[str, Any], max_channel_length: int = 0) -> SubscribeRequest:
    return _subscribe_fields(channel_name(params, max_length=max_channel_length), params)


def _subscribe_fields(channel: str, params: dict[str, Any]) -> SubscribeRequest:
    recover = boolean(params, "recover")
    since = None
    if recover:
        since = StreamPosition(integer(params, "offset", low=0), string(params, "epoch", ""))
    return SubscribeRequest(
        channel=channel,
        token=string(params, "token", ""),
        recover=recover,
        since=since,
        data=params.get("data"),
        flag=integer(params, "flag", low=0),
        delta=string(params, "delta", ""),
    )


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    token: str = ""
    data: Any = None
    name: str = ""
    version: str = ""
    subs: dict[str, SubscribeRequest] = field(default_factory=dict)
    """Positions of server-side subscriptions the client wants recovered, by channel."""


def parse_connect(params: dict[str, Any]) -> ConnectRequest:
    subs_param = params.get("subs") or {}
    if not isinstance(subs_param, dict):
        raise BadRequest("subs must be an object")
    subs = {}
    for channel, sub in subs_param.items():
        if not isinstance(sub, dict):
            raise BadRequest("subs entries must be objects")
        subs[channel] = _subscribe_fields(channel, sub)
    return ConnectRequest(
        token=string(params, "token", ""),
        data=params.get("data"),
        name=string(params, "name", ""),
        version=string(params, "version", ""),
        subs=subs,
    )


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """``refresh`` (connection token) and ``sub_refresh`` (with a channel)."""

    token: str
    channel: str = ""


def parse_refresh(params: dict[str, Any]) -> TokenRequest:
    token = string(params, "token")
    if not token:
        raise BadRequest("token is required")
    return TokenRequest(token)


def parse_sub_refresh(params: dict[str, Any]) -> TokenRequest:
    channel = channel_name(params)
    token = string(params, "token")
    if not token:
        raise BadRequest("token is required")
    return TokenRequest(token, channel)


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """``unsubscribe``, ``presence``, ``presence_stats``: a channel and nothing else."""

    channel: str


def parse_channel(params: dict[str, Any]) -> ChannelRequest:
    return ChannelRequest(channel_name(params))


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: str
    data: Any
    idempotency_key: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def parse_publish(params: dict[str, Any]) -> PublishRequest:
    return PublishRequest(
        channel=channel_name(params),
        data=data(params, required=True),
        idempotency_key=string(params, "idempotency_key", ""),
        tags=string_map(params, "tags"),
    )


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    channel: str
    limit: int = 0
    """0: only the stream position; -1: everything kept; n: at most n publications."""
    since: StreamPosition | None = None
    reverse: bool = False


def parse_history(params: dict[str, Any]) -> HistoryRequest:
    return HistoryRequest(
        channel=channel_name(params),
        limit=integer(params, "limit", low=-1),
        since=position(params, "since"),
        reverse=boolean(params, "reverse"),
    )


@dataclass(frozen=True, slots=True)
class RpcRequest:
    method: str
    data: Any = None


def parse_rpc(params: dict[str, Any]) -> RpcRequest:
    return RpcRequest(string(params, "method", ""), params.get("data"))


@dataclass(frozen=True, slots=True)
class SendRequest:
    data: Any = None


def parse_send(params: dict[str, Any]) -> SendRequest:
    return SendRequest(params.get("data"))
