"""The maintained `centrifuge` npm SDK (in Node) against the gateway: the protocol as real
clients speak it."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from conftest import require
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET, token
from support.sdk import NODE_DIR, SdkClient

API_KEY = "sdk-api-key"


@pytest.fixture(scope="module", params=["websocket", "http_stream", "sse"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test runs over the WebSocket and over each fallback (bidirectional emulation:
    the stream down, POSTs to /connection/emulation up), each against a gateway of its own."""
    return str(request.param)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, transport: str) -> Iterator[GatewayProcess]:
    require(shutil.which("node") is not None, "node is not on PATH")
    require(
        (NODE_DIR / "node_modules" / "centrifuge").is_dir(),
        "npm ci in tests/node (make test does it)",
    )
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "realtime": {
            "expired_close_delay": 1.0,
            "namespaces": {
                "chat": {
                    "presence": True,
                    "join_leave": True,
                    "history_size": 100,
                    "history_ttl": 300,
                    "force_recovery": True,
                    "allow_publish": True,
                    "allow_presence": True,
                    "allow_history": True,
                },
                "user": {"private": True},
                "doc": {
                    "history_size": 20,
                    "history_ttl": 300,
                    "force_recovery": True,
                    "allowed_delta_types": ["fossil"],
                    "delta_publish": True,
                },
            },
        },
    }
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path_factory.mktemp("sdk"), config, env=env) as gateway:
        gateway.wait_ready()
        yield gateway


class Clients(list[SdkClient]):
    """The SDK clients of a test, and the transport they connect with."""

    transport = "websocket"


@pytest.fixture
def clients(transport: str) -> Iterator[Clients]:
    made = Clients()
    made.transport = transport
    yield made
    for client in made:
        client.close()


def api(gw: GatewayProcess, method: str, **params: Any) -> dict[str, Any]:
    reply = gw.api(method, API_KEY, **params)
    assert "result" in reply, reply
    return reply["result"]


def connect(
    gw: GatewayProcess,
    clients: Clients,
    user: str = "alice",
    ttl: float = 60,
    **claims: Any,
) -> SdkClient:
    client = SdkClient(user)
    clients.append(client)
    client.send(
        op="connect",
        url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
        transport=clients.transport,
        token=token(user, ttl=ttl, **claims),
    )
    connected = client.wait(lambda e: e["event"] == "connected")
    assert connected["transport"] == clients.transport
    return client


def subscribe(client: SdkClient, channel: str, **params: Any) -> dict[str, Any]:
    mark = len(client.events)
    client.send(op="subscribe", channel=channel, **params)
    return client.wait(lambda e: e["event"] == "subscribed" and e["channel"] == channel, start=mark)


def test_connect_subscribe_and_receive_api_publications(
    gw: GatewayProcess, clients: Clients
) -> None:
    client = connect(gw, clients)
    assert client.of("connected")[0]["client"]
    sub = subscribe(client, "chat:sdk")
    assert sub["recoverable"] is True
    for i in range(3):
        api(gw, "publish", channel="chat:sdk", data={"n": i})
    client.wait(lambda e: e["event"] == "publication" and e["data"] == {"n": 2})
    pubs = client.of("publication", channel="chat:sdk")
    assert [(p["data"]["n"], p["offset"]) for p in pubs] == [(0, 1), (1, 2), (2, 3)]


def test_token_refresh_keeps_the_connection_and_its_subscriptions(
    gw: GatewayProcess, clients: Clients
) -> None:
    client = connect(gw, clients, ttl=3)
    subscribe(client, "chat:refresh")
    client.wait(lambda e: e["event"] == "need_token", timeout=10)  # the SDK asks at ttl
    client.send(op="token", token=token("alice", ttl=60))
    time.sleep(3.0)  # past the first token's expiry and the gateway's close delay
    api(gw, "publish", channel="chat:refresh", data="after refresh")
    client.wait(lambda e: e["event"] == "publication" and e["data"] == "after refresh")
    assert client.of("disconnected") == [] and len(client.of("connected")) == 1


def test_forced_disconnect_then_recovery_without_gaps(gw: GatewayProcess, clients: Clients) -> None:
    client = connect(gw, clients, user="rec")
    subscribe(client, "chat:rec")
    for i in range(1, 4):
        api(gw, "publish", channel="chat:rec", data=i)
    client.wait(lambda e: e["event"] == "publication" and e["data"] == 3)
    mark = len(client.events)
    api(gw, "disconnect", user="rec", disconnect={"code": 3011, "reason": "force reconnect"})
    for i in range(4, 9):  # published while the client is away
        api(gw, "publish", channel="chat:rec", data=i)
    again = client.wait(
        lambda e: e["event"] == "subscribed" and e["channel"] == "chat:rec", timeout=15, start=mark
    )
    assert again["wasRecovering"] is True and again["recovered"] is True
    client.wait(lambda e: e["event"] == "publication" and e["data"] == 8)
    api(gw, "publish", channel="chat:rec", data=9)
    client.wait(lambda e: e["event"] == "publication" and e["data"] == 9)
    offsets = [p["offset"] for p in client.of("publication", channel="chat:rec")]
    assert offsets == list(range(1, 10))  # contiguous: nothing missed, nothing twice
    assert client.of("connecting")  # it really went away


def test_presence_join_and_leave_between_two_clients(gw: GatewayProcess, clients: Clients) -> None:
    alice = connect(gw, clients, user="alice")
    subscribe(alice, "chat:pres")
    bob = connect(gw, clients, user="bob")
    subscribe(bob, "chat:pres")
    alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob")
    presence = alice.call("presence", channel="chat:pres")["result"]["clients"]
    assert {info["user"] for info in presence.values()} == {"alice", "bob"}
    stats = alice.call("presence_stats", channel="chat:pres")["result"]
    assert stats == {"numClients": 2, "numUsers": 2}
    bob.send(op="unsubscribe", channel="chat:pres")
    alice.wait(lambda e: e["event"] == "leave" and e["user"] == "bob")


def test_private_channel_with_a_subscription_token(gw: GatewayProcess, clients: Clients) -> None:
    client = connect(gw, clients, user="carol")
    subscribe(client, "user:carol", token=token("carol", channel="user:carol"))
    api(gw, "publish", channel="user:carol", data="for carol only")
    client.wait(lambda e: e["event"] == "publication" and e["data"] == "for carol only")
    mark = len(client.events)
    client.send(op="subscribe", channel="user:dave")  # no token: permission denied
    error = client.wait(
        lambda e: e["event"] in ("sub_error", "unsubscribed") and e["channel"] == "user:dave",
        start=mark,
    )
    assert error["code"] == 103, error


def test_history_and_client_publish(gw: GatewayProcess, clients: Clients) -> None:
    client = connect(gw, clients, user="erin")
    subscribe(client, "chat:hist")
    assert "error" not in client.call("publish", channel="chat:hist", data={"from": "browser"})
    client.wait(lambda e: e["event"] == "publication" and e["data"] == {"from": "browser"})
    history = client.call("history", channel="chat:hist", limit=10)["result"]
    assert [p["data"] for p in history["publications"]] == [{"from": "browser"}]
    assert history["offset"] == 1 and history["epoch"]


def test_server_side_subscription_from_the_token(gw: GatewayProcess, clients: Clients) -> None:
    client = connect(gw, clients, user="frank", channels=["chat:frank-news"])
    client.wait(
        lambda e: (
            e["event"] == "subscribed" and e.get("server") and e["channel"] == "chat:frank-news"
        )
    )
    api(gw, "publish", channel="chat:frank-news", data="pushed")
    client.wait(lambda e: e["event"] == "publication" and e.get("server") and e["data"] == "pushed")


def test_rpc_without_a_handler_is_not_available(gw: GatewayProcess, clients: Clients) -> None:
    # Centrifugo answers 108 (not available) when no RPC handler is configured; the SDK's own
    # test suite relies on it.
    client = connect(gw, clients, user="gina")
    assert client.call("rpc", method="anything", data={})["error"]["code"] == 108


def test_fossil_deltas_rebuild_every_version_in_the_sdk_and_shrink_the_wire(
    gw: GatewayProcess, clients: Clients
) -> None:
    # centrifuge-js with delta: "fossil" against a 2 KB JSON document updated in place; a raw
    # socket beside it counts the bytes of each kind of subscription.
    def document(version: int) -> dict[str, Any]:
        rows = [{"name": f"row {i}", "score": 1000 + i, "tags": ["a", "b"]} for i in range(40)]
        return {"id": "board", "version": version, "rows": rows}

    async def count_bytes(delta: bool, ready: asyncio.Event) -> int:
        """Bytes of the 10 publications as one subscriber receives them."""
        url = f"ws://127.0.0.1:{gw.port}/connection/websocket"
        async with websockets.connect(url, origin=f"http://127.0.0.1:{gw.port}") as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"id": 1, "connect": {"token": token("counter")}}))
            await ws.recv()
            params = {"channel": "doc:wire", **({"delta": "fossil"} if delta else {})}
            await ws.send(json.dumps({"id": 2, "subscribe": params}))
            await ws.recv()
            ready.set()
            total = seen = 0
            while seen < 10:
                frame = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(frame, str)
                for line in frame.split("\n"):
                    if '"pub"' in line:
                        total += len(line.encode())
                        seen += 1
            return total

    sdk = connect(gw, clients)
    sub = subscribe(sdk, "doc:wire", delta="fossil")
    assert sub["recoverable"] is True

    async def run() -> tuple[int, int]:
        ready = [asyncio.Event(), asyncio.Event()]
        counts = asyncio.gather(count_bytes(False, ready[0]), count_bytes(True, ready[1]))
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        for version in range(10):
            await asyncio.to_thread(api, gw, "publish", channel="doc:wire", data=document(version))
        plain, delta = await asyncio.wait_for(counts, 20)
        return plain, delta

    plain_bytes, delta_bytes = asyncio.run(run())
    sdk.wait(lambda e: e["event"] == "publication" and e["data"]["version"] == 9)
    got = [e["data"] for e in sdk.of("publication", channel="doc:wire")]
    assert got == [document(v) for v in range(10)]  # every version rebuilt by the SDK
    assert not sdk.of("disconnected")
    print(f"10 versions of a 2 KB document: {plain_bytes} bytes plain, {delta_bytes} with deltas")
    assert delta_bytes < plain_bytes / 4
