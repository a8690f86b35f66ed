"""Sans-I/O encoding of the Centrifugo client protocol v2, JSON format.

Spec: ``centrifugal/protocol`` ``definitions/client.proto`` (field names are the JSON keys) and
centrifugal.dev ``transports/client_protocol.md``. A frame holds one or more JSON objects
separated by newlines, both ways. Commands carry an ``id`` and one request field; replies echo
the ``id``; pushes have no ``id``; an empty object is a ping (server) or a pong (client).

``bytes`` fields of the schema (``data``, ``conn_info``...) are raw JSON in this format, so the
gateway keeps payloads as encoded JSON (:class:`Raw`) and splices them into frames: a
publication is encoded once, whatever the number of subscribers or history readers.

Nothing here does I/O or knows Tornado.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.realtime import jsonsafe
from gateway.realtime.codes import Error

METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)
_METHOD_SET = frozenset(METHODS)
MAX_ID = 2**32 - 1

PING = b"{}"  # a server ping: an empty reply


class ProtocolError(Exception):
    """The frame is not valid protocol: the connection ends with 3501 bad request."""


class Raw:
    """Already-encoded JSON, spliced as is into the output."""

    __slots__ = ("json",)

    def __init__(self, encoded: bytes) -> None:
        self.json = encoded

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Raw) and other.json == self.json

    def __repr__(self) -> str:
        return f"Raw({self.json!r})"


def raw(value: Any) -> Raw:
    """Encode a JSON value once."""
    return Raw(_dumps(value))


def _dumps(value: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON and JSON.parse throws on them; decoding
    # refuses them (jsonsafe), this makes sure none is ever written to a client.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(slots=True)
class Command:
    id: int
    method: str | None
    params: dict[str, Any]


def decode_commands(frame: str) -> Iterator[Command]:
    """The commands of a frame, each decoded when it is asked for: a session that closes on
    the first (a command before connect, a flood) decodes nothing more of a frame that holds
    thousands. Raises ProtocolError at the first malformed line, or at the end of a frame with
    no command at all.

    Strict JSON only (jsonsafe): NaN, Infinity, lone surrogates and deep nesting are malformed.
    """
    empty = True
    for line in frame.split("\n"):
        if not line or line.isspace():
            continue
        empty = False
        try:
            obj = jsonsafe.loads(line)
        except jsonsafe.JsonError as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("a command must be a JSON object")
        cid = obj.get("id", 0)
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= MAX_ID:
            raise ProtocolError(f"invalid command id {cid!r}")
        method = None
        params: dict[str, Any] = {}
        for key, value in obj.items():
            if key in _METHOD_SET and value is not None:
                if not isinstance(value, dict):
                    raise ProtocolError(f"{key} must be an object")
                method, params = key, value
                break  # the spec: the server takes the first request field that is set
        yield Command(cid, method, params)
    if empty:
        raise ProtocolError("empty frame")


# -- encoding ---------------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """JSON-encode ``value``, splicing :class:`Raw` values in without re-encoding them."""
    if isinstance(value, Raw):
        return value.json
    if isinstance(value, dict):
        if not any(isinstance(v, (Raw, dict, list)) for v in value.values()):
            return _dumps(value)
        parts = [_dumps(str(k)) + b":" + encode(v) for k, v in value.items()]
        return b"{" + b",".join(parts) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    return _dumps(value)


def reply(command_id: int, method: str, result: Any) -> bytes:
    return b'{"id":%d,"%s":%s}' % (command_id, method.encode(), encode(result))


def error_reply(command_id: int, error: Error) -> bytes:
    return b'{"id":%d,"error":%s}' % (command_id, _dumps(error.as_dict()))


def push(channel: str, kind: str, body: Any) -> bytes:
    """An asynchronous push, e.g. ``{"push":{"channel":"c","pub":{...}}}``."""
    return b'{"push":{"channel":%s,"%s":%s}}' % (_dumps(channel), kind.encode(), encode(body))


def channel_push_prefix(channel: str) -> bytes:
    """The constant start of every publication push in ``channel`` (for fan-out)."""
    return b'{"push":{"channel":%s,"pub":' % _dumps(channel)


def unsubscribe_push(channel: str, code: int, reason: str) -> bytes:
    """The server ended a subscription (codes >= 2500: the SDK subscribes again)."""
    return push(channel, "unsubscribe", {"code": code, "reason": reason})


def connect_push(result: Any) -> bytes:
    """The connect result as a push: how unidirectional transports deliver it."""
    return b'{"push":{"connect":%s}}' % encode(result)


def disconnect_push(code: int, reason: str, reconnect: bool) -> bytes:
    body = {"code": code, "reason": reason, "reconnect": reconnect}
    return b'{"push":{"disconnect":%s}}' % _dumps(body)


# -- shared data types ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ClientInfo:
    """Who a publication, join or leave is about (``ClientInfo`` in client.proto)."""

    user: str
    client: str
    conn_info: Raw | None = None
    chan_info: Raw | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user, "client": self.client}
        if self.conn_info is not None:
            out["conn_info"] = self.conn_info
        if self.chan_info is not None:
            out["chan_info"] = self.chan_info
        return out

    def encoded(self) -> bytes:
        return encode(self.as_dict())


@dataclass(slots=True)
class Publication:
    """A message in a channel. ``data`` is encoded JSON; ``offset`` is set by history."""

    data: Raw
    offset: int = 0
    info: ClientInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)
    time: int = 0  # Unix ms
    epoch: str = ""  # the stream's epoch (not encoded: the subscribe reply carries it)
    _json: bytes | None = None
    from_wire: bool = False
    """Built from another process's encoding (``_json``): ``data`` is not filled in, and
    :meth:`data_json` reads it from there."""

    def encoded(self) -> bytes:
        """The ``Publication`` object as JSON, computed once."""
        if self._json is None:
            parts = [b'"data":' + self.data.json]
            if self.info is not None:
                parts.append(b'"info":' + self.info.encoded())
            if self.offset:
                parts.append(b'"offset":%d' % self.offset)
            if self.tags:
                parts.append(b'"tags":' + _dumps(self.tags))
            if self.time:
                parts.append(b'"time":%d' % self.time)
            self._json = b"{" + b",".join(parts) + b"}"
        return self._json

    # -- delta subscriptions (fossil.py): every data is a JSON string there ---------------------

    def data_json(self) -> bytes:
        """The data's JSON text, as in :meth:`encoded`."""
        if not self.from_wire:
            return self.data.json
        text = self.encoded().decode()
        _, end = _VALUE.raw_decode(text, len(_DATA_KEY))
        return text[len(_DATA_KEY) : end].encode()

    def encoded_as_text(self) -> bytes:
        """The publication for a delta subscriber that gets it whole: ``data`` is a JSON
        string holding the data's JSON text (the SDK parses it and keeps it as its base)."""
        data = self.data_json()
        return _DATA_KEY + _dumps(data.decode()) + self._after_data(data)

    def encoded_as_delta(self, delta: bytes) -> bytes:
        """The publication as a fossil delta against the previous one (``delta: true``)."""
        data = self.data_json()
        return _DATA_KEY + _dumps(delta.decode()) + b',"delta":true' + self._after_data(data)

    def _after_data(self, data: bytes) -> bytes:
        return self.encoded()[len(_DATA_KEY) + len(data) :]


_DATA_KEY = b'{"data":'
_VALUE = json.JSONDecoder()
