"""The realtime endpoint over real sockets (Python websockets): handshake rules, bad input
with its exact code, and the gateway serving other clients through all of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET, token
from websockets.exceptions import ConnectionClosed, InvalidStatus

API_KEY = "integration-api-key"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "realtime": {
            "command_rate": 20,
            "command_burst": 20,
            "max_message_size": 4096,
            "namespaces": {
                "chat": {
                    "presence": True,
                    "history_size": 10,
                    "history_ttl": 60,
                    "force_recovery": True,
                    "allow_publish": True,
                }
            },
        },
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path_factory.mktemp("rt"), config, env=env) as gateway:
        gateway.wait_ready()
        yield gateway


def ws_url(gw: GatewayProcess, query: str = "") -> str:
    return f"ws://127.0.0.1:{gw.port}/connection/websocket{query}"


def origin(gw: GatewayProcess) -> Any:
    return f"http://127.0.0.1:{gw.port}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def closed_with(ws: Any) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (1006, "")


async def healthy(gw: GatewayProcess) -> None:
    """Another client can still connect and get a reply."""
    async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token("other")}}))
        assert "connect" in json.loads(await ws.recv())


def test_connect_subscribe_and_receive_an_api_publication(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
            await ws.send(
                json.dumps({"id": 1, "connect": {"token": token()}})
                + "\n"
                + json.dumps({"id": 2, "subscribe": {"channel": "chat:it"}})
            )
            replies = []
            while len(replies) < 2:
                replies += [json.loads(line) for line in (await ws.recv()).split("\n")]
            assert replies[1]["subscribe"]["recoverable"] is True
            status, _, body = await asyncio.to_thread(
                gw.request,
                "/_gateway/api/publish",
                method="POST",
                body=json.dumps({"channel": "chat:it", "data": {"hello": "world"}}).encode(),
                headers={"X-API-Key": API_KEY},
            )
            assert status == 200 and json.loads(body)["result"]["offset"] == 1
            push = json.loads(await ws.recv())
            assert push["push"]["pub"]["data"] == {"hello": "world"}

    run(scenario())


def test_cross_site_origin_is_refused_before_the_upgrade(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(ws_url(gw), origin="http://evil.example")
        assert info.value.response.status_code == 403
        await healthy(gw)

    run(scenario())


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (["{this is not json"], (3501, "bad request")),
        ([json.dumps({"id": 1, "subscribe": {"channel": "chat:x"}})], (3501, "bad request")),
        ([json.dumps({"id": 1, "connect": {"token": "not-a-jwt"}})], (3500, "invalid token")),
    ],
    ids=["malformed-json", "command-before-connect", "malformed-token"],
)
def test_bad_input_gets_its_disconnect_code(
    gw: GatewayProcess, frames: list[str], expected: tuple[int, str]
) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
            for frame in frames:
                await ws.send(frame)
            assert await closed_with(ws) == expected
        await healthy(gw)

    run(scenario())


def test_oversized_message_is_closed_with_1009(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw), max_size=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token(), "data": "x" * 5000}}))
            assert (await closed_with(ws))[0] == 1009
        await healthy(gw)

    run(scenario())


def test_invalid_utf8_is_closed_with_1007(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
            # A text frame whose bytes are not UTF-8, written below the library's own checks.
            ws.protocol.send_text(b"\xff\xfe{}")
            ws.send_data()
            assert (await closed_with(ws))[0] == 1007
        await healthy(gw)

    run(scenario())


def test_unknown_method_is_104_and_the_connection_stays(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token()}}))
            await ws.recv()
            await ws.send(json.dumps({"id": 2, "frobnicate": {}}))
            assert json.loads(await ws.recv()) == {
                "id": 2,
                "error": {"code": 104, "message": "method not found"},
            }
            await ws.send(json.dumps({"id": 3, "ping": {}}))
            assert json.loads(await ws.recv()) == {"id": 3, "ping": {}}

    run(scenario())


def test_flood_gets_111_then_3013(gw: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(ws_url(gw), origin=origin(gw)) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token()}}))
            await ws.recv()
            codes = []
            try:
                for i in range(2, 200):
                    await ws.send(json.dumps({"id": i, "ping": {}}))
                while True:
                    for line in (await ws.recv()).split("\n"):
                        msg = json.loads(line)
                        if "error" in msg:
                            codes.append(msg["error"]["code"])
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 3013
            assert codes and set(codes) == {111}
        await healthy(gw)

    run(scenario())


def test_tokens_never_reach_the_log(gw: GatewayProcess) -> None:
    secret_token = token("logged")

    async def scenario() -> None:
        async with websockets.connect(
            ws_url(gw, f"?token={secret_token}&x=1"), origin=origin(gw)
        ) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": secret_token}}))
            await ws.recv()

    run(scenario())
    gw.wait_log("token=[redacted]&x=1")
    assert secret_token not in gw.log


def test_server_api_needs_the_key(gw: GatewayProcess) -> None:
    body = json.dumps({"channel": "chat:k", "data": 1}).encode()
    status, _, _ = gw.request("/_gateway/api/publish", method="POST", body=body)
    assert status == 401
    status, _, _ = gw.request(
        "/_gateway/api/publish", method="POST", body=body, headers={"X-API-Key": "wrong"}
    )
    assert status == 401
    status, _, reply = gw.request(
        "/_gateway/api/publish",
        method="POST",
        body=body,
        headers={"Authorization": f"apikey {API_KEY}"},
    )
    assert status == 200 and "result" in json.loads(reply)
    status, _, reply = gw.request(
        "/_gateway/api/nope", method="POST", body=b"{}", headers={"X-API-Key": API_KEY}
    )
    assert json.loads(reply)["error"]["code"] == 104
    status, _, reply = gw.request(
        "/_gateway/api/publish", method="POST", body=b"[", headers={"X-API-Key": API_KEY}
    )
    assert status == 400


def test_idempotent_publish_returns_the_first_position(gw: GatewayProcess) -> None:
    def publish() -> dict[str, Any]:
        body = json.dumps(
            {"channel": "chat:idem", "data": 1, "idempotency_key": "order-42"}
        ).encode()
        return json.loads(
            gw.request(
                "/_gateway/api/publish", method="POST", body=body, headers={"X-API-Key": API_KEY}
            )[2]
        )["result"]

    first, second = publish(), publish()
    assert first == second and first["offset"] == 1
    history = json.loads(
        gw.request(
            "/_gateway/api/history",
            method="POST",
            body=json.dumps({"channel": "chat:idem", "limit": -1}).encode(),
            headers={"X-API-Key": API_KEY},
        )[2]
    )["result"]
    assert len(history["publications"]) == 1


def test_api_from_a_non_loopback_peer_is_refused(tmp_path: Path) -> None:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "api": {"allowed_networks": ["10.0.0.0/8"]},
    }
    with GatewayProcess(tmp_path, config, env={"GATEWAY_API_KEY": API_KEY}) as gateway:
        gateway.wait_ready()
        status, _, _ = gateway.request(
            "/_gateway/api/info", method="POST", body=b"{}", headers={"X-API-Key": API_KEY}
        )
        assert status == 403
