"""Hostile bodies to the server API (``POST /_gateway/api/<method>``) against a real gateway:
400 with a JSON error body, nothing published, and the API and everything else still work."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from support.abuse import api_call, log_mark, run, still_serving
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET

API_KEY = "attack-api-key"
MAX_BODY = 1024 * 1024
CHANNEL = "chat:api"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "server": {"max_body_size": MAX_BODY},
        "realtime": {"namespaces": {"chat": {"history_size": 100, "history_ttl": 300}}},
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path_factory.mktemp("api-abuse"), config, env=env) as gateway:
        gateway.wait_ready()
        yield gateway


def top_offset(gw: GatewayProcess) -> int:
    status, reply = api_call(gw, API_KEY, json.dumps({"channel": CHANNEL}).encode(), "history")
    assert status == 200, reply
    offset: int = reply["result"]["offset"]
    return offset


def publish(data: str, channel: str = CHANNEL) -> bytes:
    return ('{"channel":"%s","data":%s}' % (channel, data)).encode()  # noqa: UP031


BAD_BODIES = {
    "nan": publish("NaN"),
    "infinity": publish("Infinity"),
    "minus-infinity": publish("-Infinity"),
    "overflow": publish("1e400"),
    "nested-nan": publish('{"a":[1,{"b":NaN}]}'),
    "60000-brackets": b"[" * 60000,
    "60000-braces": b'{"a":' * 60000,
    "depth-65": publish("[" * 64 + "]" * 64),
    "depth-5000": publish("[" * 5000 + "]" * 5000),
    "surrogate-channel": publish('"x"', channel="chat:\\ud800"),
    "surrogate-data": publish('"\\udfff"'),
    "surrogate-key": publish('{"\\ud83d":1}'),
    "array": b"[]",
    "string": b'"publish"',
    "number": b"1",
    "null": b"null",
    "not-utf8": b'{"channel":"chat:api","data":"\xff"}',
    "not-json": b"{channel: chat:api}",
    "5000-digit-number": publish("1" * 5000),
    "broadcast-nan": b'{"channels":["chat:api"],"data":NaN}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bodies_json_cannot_carry_are_400_and_publish_nothing(
    gw: GatewayProcess, name: str
) -> None:
    mark = log_mark(gw)
    before = top_offset(gw)
    method = "broadcast" if name.startswith("broadcast") else "publish"
    status, reply = api_call(gw, API_KEY, BAD_BODIES[name], method)
    assert status == 400
    assert reply["error"] == "bad_request" and reply["detail"]
    assert top_offset(gw) == before
    status, reply = api_call(gw, API_KEY, publish('{"after":"%s"}' % name))  # noqa: UP031
    assert status == 200 and reply["result"]["offset"] == before + 1
    run(still_serving(gw, mark))


def test_nesting_up_to_64_levels_is_published(gw: GatewayProcess) -> None:
    # The body is level 1: data adds 63 more.
    status, reply = api_call(gw, API_KEY, publish("[" * 63 + "]" * 63))
    assert status == 200 and "result" in reply, reply


def test_a_surrogate_pair_is_an_ordinary_character(gw: GatewayProcess) -> None:
    status, reply = api_call(
        gw, API_KEY, publish('"\\ud83d\\ude00"', channel="chat:\\ud83d\\ude00")
    )
    assert status == 200 and "result" in reply, reply


def test_a_big_flat_body_under_the_limit_is_published(gw: GatewayProcess) -> None:
    mark = log_mark(gw)
    data = json.dumps({f"k{i}": [i] for i in range(50_000)})
    body = publish(data)
    assert len(body) < MAX_BODY
    status, reply = api_call(gw, API_KEY, body)
    assert status == 200 and "result" in reply, reply
    run(still_serving(gw, mark))


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(gw: GatewayProcess) -> None:
    mark = log_mark(gw)
    head = (
        "POST /_gateway/api/publish HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{gw.port}\r\n"
        f"X-API-Key: {API_KEY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"channel":"chat:api","data":"')  # and no more
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert api_call(gw, API_KEY, publish("1"))[0] == 200
    run(still_serving(gw, mark))
