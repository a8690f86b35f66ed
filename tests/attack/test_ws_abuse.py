"""Hostile WebSocket clients against a real gateway (stand-in child): each attack gets its exact
close code or error code, and the gateway keeps serving HTTP and other sockets promptly, with no
traceback in its log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.abuse import (
    PROMPT,
    api_call,
    closed_with,
    connected,
    error_codes,
    log_mark,
    read_until_closed,
    run,
    still_serving,
    ws_connect,
)
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET, token
from websockets.exceptions import ConnectionClosed

API_KEY = "attack-api-key"
MAX_MESSAGE = 65536
BURST = 20
MAX_CHANNELS = 5


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "realtime": {
            "command_rate": BURST,
            "command_burst": BURST,
            "max_message_size": MAX_MESSAGE,
            "max_channels_per_client": MAX_CHANNELS,
            "namespaces": {"chat": {"allow_publish": True}},
        },
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path_factory.mktemp("ws-abuse"), config, env=env) as gateway:
        gateway.wait_ready()
        yield gateway


def lines(commands: list[str], limit: int = MAX_MESSAGE - 100) -> str:
    """As many of ``commands`` as fit in one frame under the size limit."""
    out, size = [], 0
    for command in commands:
        size += len(command) + 1
        if size > limit:
            break
        out.append(command)
    return "\n".join(out)


def attack(gw: GatewayProcess, scenario: Any) -> None:
    """Run ``scenario(ws)`` on a fresh socket, then check the gateway still serves."""

    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw, max_size=None) as ws:
            await scenario(ws)
        await still_serving(gw, mark)

    run(go())


# -- commands without a method ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "{}",
        '{"id":1}',
        lines(["{}"] * 30000),
        lines([json.dumps({"id": i}) for i in range(1, 10000)]),
    ],
    ids=["empty", "id-only", "frame-of-empty", "frame-of-id-only"],
)
def test_commands_without_a_method_before_connect_are_3501(gw: GatewayProcess, frame: str) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(frame)
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


def test_an_empty_command_after_connect_is_a_pong(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        await ws.send("{}")
        await ws.send(json.dumps({"id": 2, "ping": {}}))
        assert json.loads(await ws.recv()) == {"id": 2, "ping": {}}  # nothing answered {}

    attack(gw, scenario)


@pytest.mark.parametrize("one_frame", [True, False], ids=["one-frame", "many-frames"])
def test_a_flood_of_empty_commands_is_3013(gw: GatewayProcess, one_frame: bool) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        if one_frame:
            await ws.send(lines(["{}"] * 30000))
        else:
            try:
                for _ in range(200):
                    await ws.send("{}")
            except ConnectionClosed:
                pass  # closed by the gateway mid-flood, as it should be
        messages, closed = await read_until_closed(ws, timeout=5)
        assert closed == (3013, "too many requests")
        assert messages[-1]["push"]["disconnect"]["code"] == 3013

    attack(gw, scenario)


def test_a_flood_of_ids_without_a_method_is_104_then_111_then_3013(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        await ws.send(lines([json.dumps({"id": i}) for i in range(2, 5000)]))
        messages, closed = await read_until_closed(ws, timeout=5)
        codes = error_codes(messages)
        assert set(codes) == {104, 111}
        assert codes == sorted(codes)  # method-not-found answers, then the limiter's
        assert closed == (3013, "too many requests")

    attack(gw, scenario)


def test_thousands_of_commands_before_connect_are_3501(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(lines([json.dumps({"id": i, "ping": {}}) for i in range(1, 5000)]))
        messages, closed = await read_until_closed(ws, timeout=5)
        assert closed == (3501, "bad request")
        assert error_codes(messages) == []  # no command was answered

    attack(gw, scenario)


def test_thousands_of_connect_commands_are_107_then_111_then_3013(gw: GatewayProcess) -> None:
    tok = token("repeat")

    async def scenario(ws: Any) -> None:
        connect = [json.dumps({"id": i, "connect": {"token": tok}}) for i in range(1, 2000)]
        await ws.send(lines(connect))
        messages, closed = await read_until_closed(ws, timeout=5)
        assert "connect" in messages[0]
        codes = error_codes(messages)
        assert codes[0] == 107 and codes[-1] == 111 and set(codes) == {107, 111}
        assert closed == (3013, "too many requests")

    attack(gw, scenario)


def test_floods_on_several_sockets_do_not_slow_down_other_requests(gw: GatewayProcess) -> None:
    async def flood() -> tuple[int, str]:
        async with ws_connect(gw) as ws:
            await connected(ws)
            try:
                for _ in range(20):
                    await ws.send(lines(["{}"] * 30000))
            except ConnectionClosed:
                pass  # closed by the gateway mid-flood, as it should be
            return await closed_with(ws, timeout=10)

    async def go() -> None:
        mark = log_mark(gw)
        floods = [asyncio.create_task(flood()) for _ in range(4)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        status, _, _ = await asyncio.to_thread(gw.request, "/", timeout=10)
        assert status == 200 and time.monotonic() - started < PROMPT
        assert await asyncio.gather(*floods) == [(3013, "too many requests")] * 4
        await still_serving(gw, mark)

    run(go())


# -- values JavaScript cannot read --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    ["NaN", "Infinity", "-Infinity", "1e400", "[1,NaN]", '{"a":{"b":-Infinity}}'],
)
def test_non_json_numbers_are_3501_and_never_reach_subscribers(
    gw: GatewayProcess, data: str
) -> None:
    channel = f"chat:nan-{abs(hash(data))}"

    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as subscriber, ws_connect(gw) as publisher:
            await connected(subscriber, "subscriber")
            await subscriber.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
            assert "subscribe" in json.loads(await subscriber.recv())
            await connected(publisher)
            await publisher.send(
                '{"id":2,"publish":{"channel":"%s","data":%s}}' % (channel, data)  # noqa: UP031
            )
            assert await closed_with(publisher, timeout=5) == (3501, "bad request")
            # What the subscriber gets next is the next good publication, nothing before it.
            body = json.dumps({"channel": channel, "data": {"ok": 1}}).encode()
            assert (await asyncio.to_thread(api_call, gw, API_KEY, body))[0] == 200
            push = json.loads(await asyncio.wait_for(subscriber.recv(), 5))
            assert push["push"]["pub"]["data"] == {"ok": 1}
        await still_serving(gw, mark)

    run(go())


def test_non_json_numbers_in_connect_are_3501(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send('{"id":1,"connect":{"token":"%s","data":NaN}}' % token())  # noqa: UP031
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 60000,
        "{" * 60000,
        '{"a":' * 12000,
        '{"id":1,"connect":{"data":' + "[" * 1000 + "]" * 1000 + "}}",
    ],
    ids=["arrays", "braces", "objects", "depth-1002"],
)
def test_deep_nesting_is_3501_with_a_clean_close(gw: GatewayProcess, frame: str) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(frame)
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


def test_nesting_up_to_64_levels_is_delivered_65_is_3501(gw: GatewayProcess) -> None:
    channel = "chat:deep"

    def publish(levels: int) -> str:
        # The command is level 1 and its params level 2: data adds the rest.
        data = "[" * (levels - 2) + "]" * (levels - 2)
        return '{"id":2,"publish":{"channel":"%s","data":%s}}' % (channel, data)  # noqa: UP031

    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as ws:
            await connected(ws)
            await ws.send(json.dumps({"id": 3, "subscribe": {"channel": channel}}))
            assert "subscribe" in json.loads(await ws.recv())
            await ws.send(publish(64))
            got = [json.loads(line) for line in (await ws.recv()).split("\n")]
            while len(got) < 2:
                got += [json.loads(line) for line in (await ws.recv()).split("\n")]
            pushes = [m for m in got if "push" in m]
            assert json.dumps(pushes[0]["push"]["pub"]["data"]).count("[") == 62
            await ws.send(publish(65))
            assert await closed_with(ws, timeout=5) == (3501, "bad request")
        await still_serving(gw, mark)

    run(go())


@pytest.mark.parametrize(
    "command",
    [
        '{"id":2,"subscribe":{"channel":"chat:\\ud800"}}',
        '{"id":2,"subscribe":{"channel":"chat:\\udfff"}}',
        '{"id":2,"publish":{"channel":"chat:x","data":"\\ud83d"}}',
        '{"id":2,"publish":{"channel":"chat:x","data":{"\\udc00":1}}}',
    ],
    ids=["high-in-channel", "low-in-channel", "in-data", "in-a-key"],
)
def test_lone_surrogates_are_3501(gw: GatewayProcess, command: str) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        await ws.send(command)
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


def test_a_surrogate_pair_is_an_ordinary_character(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        await ws.send('{"id":2,"subscribe":{"channel":"chat:\\ud83d\\ude00"}}')
        assert json.loads(await ws.recv()) == {"id": 2, "subscribe": {}}
        await ws.send(
            '{"id":3,"publish":{"channel":"chat:\\ud83d\\ude00","data":"\\ud83d\\ude00"}}'
        )
        got: list[dict[str, Any]] = []
        while len(got) < 2:
            got += [json.loads(line) for line in (await ws.recv()).split("\n")]
        push = next(m for m in got if "push" in m)
        assert push["push"]["channel"] == "chat:😀"
        assert push["push"]["pub"]["data"] == "😀"

    attack(gw, scenario)


# -- JSON bombs within the size limit -----------------------------------------------------------


def many_keys(size: int) -> str:
    keys, total = [], 0
    while total < size:
        keys.append(f'"k{len(keys)}":{len(keys)}')
        total += len(keys[-1]) + 1
    return "{" + ",".join(keys) + "}"


@pytest.mark.parametrize(
    "data",
    [
        many_keys(MAX_MESSAGE - 1000),
        "[" + ",".join(["[1]"] * ((MAX_MESSAGE - 1000) // 4)) + "]",
        '{"s":"' + "[" * (MAX_MESSAGE - 1000) + '"}',
    ],
    ids=["many-keys", "many-small-arrays", "brackets-in-a-string"],
)
def test_a_big_flat_payload_up_to_the_size_limit_is_accepted_promptly(
    gw: GatewayProcess, data: str
) -> None:
    async def scenario(ws: Any) -> None:
        frame = '{"id":1,"connect":{"token":"%s","data":%s}}' % (token(), data)  # noqa: UP031
        assert MAX_MESSAGE - 1000 < len(frame) <= MAX_MESSAGE
        started = time.monotonic()
        await ws.send(frame)
        assert "connect" in json.loads(await ws.recv())
        assert time.monotonic() - started < PROMPT

    attack(gw, scenario)


def test_a_frame_over_the_size_limit_is_1009(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(
            json.dumps({"id": 1, "connect": {"token": token(), "data": "x" * MAX_MESSAGE}})
        )
        assert (await closed_with(ws, timeout=5))[0] == 1009

    attack(gw, scenario)


# -- frames that are not UTF-8 text -------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_invalid_utf8_is_1007(gw: GatewayProcess, binary: bool) -> None:
    async def scenario(ws: Any) -> None:
        payload = b'{"id":1,"connect":{"data":"\xff\xfe"}}'
        # Written below the library's own checks (it would refuse to send bad text).
        if binary:
            ws.protocol.send_binary(payload)
        else:
            ws.protocol.send_text(payload)
        ws.send_data()
        assert (await closed_with(ws, timeout=5))[0] == 1007

    attack(gw, scenario)


def test_binary_frames_are_read_as_utf8_commands(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token()}}).encode())
        assert "connect" in json.loads(await ws.recv())
        await ws.send(b'{"id":2,"publish":{"channel":"chat:b","data":NaN}}')
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


def test_a_binary_empty_command_before_connect_is_3501(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await ws.send(b"{}")
        assert await closed_with(ws, timeout=5) == (3501, "bad request")

    attack(gw, scenario)


# -- subscriptions --------------------------------------------------------------------------------


def test_a_subscribe_storm_gets_106_then_111_then_3013(gw: GatewayProcess) -> None:
    async def scenario(ws: Any) -> None:
        await connected(ws)
        subscribes = [
            json.dumps({"id": i, "subscribe": {"channel": f"chat:storm-{i}"}})
            for i in range(2, 3000)
        ]
        await ws.send(lines(subscribes))
        messages, closed = await read_until_closed(ws, timeout=5)
        assert [m["id"] for m in messages if "subscribe" in m] == list(range(2, 2 + MAX_CHANNELS))
        codes = error_codes(messages)
        assert set(codes) == {106, 111} and codes == sorted(codes)
        assert closed == (3013, "too many requests")

    attack(gw, scenario)


def test_many_sockets_subscribing_to_many_channels(gw: GatewayProcess) -> None:
    async def one(n: int) -> list[int]:
        async with ws_connect(gw) as ws:
            await connected(ws, f"storm-{n}")
            await ws.send(
                "\n".join(
                    json.dumps({"id": i, "subscribe": {"channel": f"chat:s{n}-{i}"}})
                    for i in range(2, 2 + MAX_CHANNELS + 3)
                )
            )
            replies: list[dict[str, Any]] = []
            while len(replies) < MAX_CHANNELS + 3:
                replies += [json.loads(line) for line in (await ws.recv()).split("\n")]
            return error_codes(replies)

    async def go() -> None:
        mark = log_mark(gw)
        results = await asyncio.gather(*(one(n) for n in range(30)))
        assert results == [[106, 106, 106]] * 30
        await still_serving(gw, mark)

    run(go())
