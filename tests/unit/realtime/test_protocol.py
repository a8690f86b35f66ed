"""Frames in, commands out; replies and pushes encoded with raw JSON spliced in."""

from __future__ import annotations

import json

import pytest

from gateway.realtime import codes
from gateway.realtime.protocol import (
    ClientInfo,
    ProtocolError,
    Publication,
    Raw,
    decode_commands,
    disconnect_push,
    encode,
    error_reply,
    push,
    raw,
    reply,
)


def test_several_commands_per_frame_and_the_first_request_field_wins() -> None:
    frame = (
        '{"id":1,"connect":{"token":"t"}}\n{"id":2,"subscribe":{"channel":"a"},"publish":{}}\n{}'
    )
    commands = list(decode_commands(frame))
    assert [(c.id, c.method) for c in commands] == [(1, "connect"), (2, "subscribe"), (0, None)]
    assert commands[0].params == {"token": "t"}


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"id":-1,"ping":{}}',
        '{"id":"1","ping":{}}',
        '{"id":1,"subscribe":"x"}',
        '{"id":4294967296,"ping":{}}',
        "\n\n",
    ],
)
def test_malformed_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(ProtocolError):
        list(decode_commands(frame))


def test_raw_json_is_spliced_not_reencoded() -> None:
    data = Raw(b'{"b":1,  "a":[1,2]}')  # odd spacing proves it is not re-encoded
    assert (
        encode({"x": data, "n": [data]}) == b'{"x":{"b":1,  "a":[1,2]},"n":[{"b":1,  "a":[1,2]}]}'
    )
    assert json.loads(reply(7, "rpc", {"data": data})) == {
        "id": 7,
        "rpc": {"data": {"b": 1, "a": [1, 2]}},
    }


def test_publication_is_encoded_once_and_parses_back() -> None:
    info = ClientInfo("alice", "c1", raw({"name": "Alice"}))
    pub = Publication(raw({"text": "héllo"}), offset=3, info=info, tags={"k": "v"}, time=5)
    first = pub.encoded()
    assert pub.encoded() is first
    assert json.loads(push("chat:1", "pub", Raw(first))) == {
        "push": {
            "channel": "chat:1",
            "pub": {
                "data": {"text": "héllo"},
                "offset": 3,
                "tags": {"k": "v"},
                "time": 5,
                "info": {"user": "alice", "client": "c1", "conn_info": {"name": "Alice"}},
            },
        },
    }


def test_error_and_disconnect_encodings() -> None:
    assert json.loads(error_reply(2, codes.TOO_MANY_REQUESTS)) == {
        "id": 2,
        "error": {"code": 111, "message": "too many requests", "temporary": True},
    }
    assert json.loads(error_reply(2, codes.PERMISSION_DENIED)) == {
        "id": 2,
        "error": {"code": 103, "message": "permission denied"},
    }
    assert json.loads(disconnect_push(3001, "shutdown", True)) == {
        "push": {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}},
    }


def test_codes_match_the_spec() -> None:
    assert [
        e.code
        for e in (
            codes.INTERNAL,
            codes.UNAUTHORIZED,
            codes.UNKNOWN_CHANNEL,
            codes.PERMISSION_DENIED,
            codes.METHOD_NOT_FOUND,
            codes.ALREADY_SUBSCRIBED,
            codes.LIMIT_EXCEEDED,
            codes.BAD_REQUEST,
            codes.NOT_AVAILABLE,
            codes.TOKEN_EXPIRED,
            codes.EXPIRED,
            codes.TOO_MANY_REQUESTS,
            codes.UNRECOVERABLE_POSITION,
        )
    ] == list(range(100, 113))
    assert {e.code for e in (codes.INTERNAL, codes.TOO_MANY_REQUESTS)} == {
        e.code for e in vars(codes).values() if isinstance(e, codes.Error) and e.temporary
    }
    assert codes.SHUTDOWN.reconnect and codes.NO_PONG.reconnect and codes.SLOW.reconnect
    assert not codes.INVALID_TOKEN.reconnect and not codes.BAD_REQUEST_DISCONNECT.reconnect
