"""The Redis engine across processes: two gateways (or workers) sharing Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import require
from support.procs import GatewayProcess, standin_command, wait_until
from support.realtime import SECRET, token
from support.redis import RedisServer, redis_available
from support.sdk import NODE_DIR, SdkClient

API_KEY = "redis-api-key"


def config(
    url: str = "redis://127.0.0.1:6379/14", prefix: str | None = None, **server: Any
) -> dict[str, Any]:
    return {
        "next": {"dir": ".", "command": standin_command()},
        "server": server,
        "engine": {
            "kind": "redis",
            "redis_url": url,
            "prefix": prefix or f"it-{secrets.token_hex(4)}",
            "presence_ttl": 3,
        },
        "realtime": {
            "namespaces": {
                "chat": {
                    "presence": True,
                    "join_leave": True,
                    "history_size": 1000,
                    "history_ttl": 600,
                    "force_recovery": True,
                    "allow_publish": True,
                    "allow_presence": True,
                }
            }
        },
    }


ENV = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}


def api(gw: GatewayProcess, method: str, **params: Any) -> dict[str, Any]:
    for _ in range(3):  # a connection queued at a worker killed a moment ago is reset: retry
        try:
            return _api(gw, method, **params)
        except ConnectionResetError:
            time.sleep(0.1)
    return _api(gw, method, **params)


def _api(gw: GatewayProcess, method: str, **params: Any) -> dict[str, Any]:
    return gw.api(method, API_KEY, **params)


@pytest.fixture(scope="module", autouse=True)
def clean_redis() -> Iterator[None]:
    """Leave nothing behind in the machine's Redis (database 14)."""
    yield
    if redis_available():
        for pattern in ("pair-*", "it-*"):
            keys = subprocess.run(
                ["redis-cli", "-n", "14", "--scan", "--pattern", pattern],
                capture_output=True,
                text=True,
            ).stdout.split()
            for start in range(0, len(keys), 500):
                subprocess.run(
                    ["redis-cli", "-n", "14", "DEL", *keys[start : start + 500]],
                    capture_output=True,
                )


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two independent gateway processes on the same Redis prefix."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    cfg = config(prefix=f"pair-{secrets.token_hex(4)}")
    with (
        GatewayProcess(tmp_path_factory.mktemp("a"), cfg, env=ENV) as a,
        GatewayProcess(tmp_path_factory.mktemp("b"), cfg, env=ENV) as b,
    ):
        a.wait_ready()
        b.wait_ready()
        yield a, b


class Raw:
    """A raw protocol client (Python websockets) for precise assertions."""

    def __init__(self, gw: GatewayProcess, user: str = "u") -> None:
        self.gw, self.user = gw, user
        self.messages: list[dict[str, Any]] = []

    async def __aenter__(self) -> Raw:
        self.ws = await websockets.connect(f"ws://127.0.0.1:{self.gw.port}/connection/websocket")
        await self.ws.send(json.dumps({"id": 1, "connect": {"token": token(self.user)}}))
        await self.until(lambda m: m.get("id") == 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def until(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            for message in self.messages:
                if predicate(message):
                    return message
            while True:
                for line in (await self.ws.recv()).split("\n"):
                    message = json.loads(line)
                    self.messages.append(message)
                    if message == {}:
                        await self.ws.send("{}")
                    if predicate(message):
                        return message

        return await asyncio.wait_for(read(), timeout)

    async def subscribe(self, channel: str, cid: int, **params: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps({"id": cid, "subscribe": {"channel": channel, **params}}))
        return (await self.until(lambda m: m.get("id") == cid))["subscribe"]

    def pubs(self, channel: str) -> list[dict[str, Any]]:
        return [
            m["push"]["pub"]
            for m in self.messages
            if m.get("push", {}).get("channel") == channel and "pub" in m["push"]
        ]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_publish_via_one_process_reaches_subscribers_of_both(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, b = pair

    async def scenario() -> None:
        async with Raw(a) as on_a, Raw(b) as on_b:
            await on_a.subscribe("chat:both", 2)
            await on_b.subscribe("chat:both", 2)
            for i in range(5):
                assert (
                    api(a, "publish", channel="chat:both", data={"i": i})["result"]["offset"]
                    == i + 1
                )
            for client in (on_a, on_b):
                await client.until(
                    lambda m: m.get("push", {}).get("pub", {}).get("data") == {"i": 4}
                )
                assert [p["offset"] for p in client.pubs("chat:both")] == [
                    1,
                    2,
                    3,
                    4,
                    5,
                ]  # in order

    run(scenario())


def test_server_api_disconnect_and_unsubscribe_reach_every_process(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """The API call lands on one process; the user's connections are on both."""
    a, b = pair

    async def scenario() -> None:
        async with Raw(a, "kicked") as on_a, Raw(b, "kicked") as on_b, Raw(a, "stays") as other:
            for client in (on_a, on_b, other):
                await client.subscribe("chat:kick", 2)
            reply = await asyncio.to_thread(
                api, b, "unsubscribe", channel="chat:kick", user="kicked"
            )
            assert reply == {"result": {}}, reply
            for client in (on_a, on_b):
                push = await client.until(lambda m: "unsubscribe" in m.get("push", {}))
                assert push["push"]["channel"] == "chat:kick"
            reply = await asyncio.to_thread(
                api, b, "disconnect", user="kicked", disconnect={"code": 3011, "reason": "bye"}
            )
            assert reply == {"result": {}}, reply
            for client in (on_a, on_b):
                push = await client.until(lambda m: "disconnect" in m.get("push", {}))
                assert push["push"]["disconnect"]["code"] == 3011
            await asyncio.sleep(0.3)  # the other user, on A, is left alone
            assert not any("unsubscribe" in m.get("push", {}) for m in other.messages)
            assert not any("disconnect" in m.get("push", {}) for m in other.messages)

    asyncio.run(scenario())


def test_recovery_on_the_other_process(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair

    async def scenario() -> None:
        async with Raw(a) as first:
            sub = await first.subscribe("chat:rec", 2)
            api(a, "publish", channel="chat:rec", data="seen")
            await first.until(lambda m: m.get("push", {}).get("pub", {}).get("data") == "seen")
            epoch, offset = sub["epoch"], first.pubs("chat:rec")[-1]["offset"]
        for i in range(3):  # published via A while the client is away
            api(a, "publish", channel="chat:rec", data=f"missed {i}")
        async with Raw(b) as again:  # it comes back to the other process
            result = await again.subscribe("chat:rec", 2, recover=True, epoch=epoch, offset=offset)
            assert result["recovered"] is True
            assert [p["data"] for p in result["publications"]] == [
                "missed 0",
                "missed 1",
                "missed 2",
            ]
            assert [p["offset"] for p in result["publications"]] == [
                offset + 1,
                offset + 2,
                offset + 3,
            ]

    run(scenario())


def test_presence_and_join_across_processes(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair

    async def scenario() -> None:
        async with Raw(a, "alice") as alice:
            await alice.subscribe("chat:pres", 2)
            async with Raw(b, "bob") as bob:
                await bob.subscribe("chat:pres", 2)
                await alice.until(
                    lambda m: m.get("push", {}).get("join", {}).get("info", {}).get("user") == "bob"
                )
                presence = api(a, "presence", channel="chat:pres")["result"]["presence"]
                assert {v["user"] for v in presence.values()} == {"alice", "bob"}
                assert api(b, "presence_stats", channel="chat:pres")["result"] == {
                    "num_clients": 2,
                    "num_users": 2,
                }
            await alice.until(
                lambda m: m.get("push", {}).get("leave", {}).get("info", {}).get("user") == "bob"
            )

    run(scenario())


def test_gap_in_offsets_makes_subscribers_recover(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, _ = pair
    prefix = config_prefix(a)

    async def scenario() -> None:
        async with Raw(a) as client:
            sub = await client.subscribe("chat:gap", 2)
            api(a, "publish", channel="chat:gap", data="one")
            await client.until(lambda m: m.get("push", {}).get("pub", {}).get("data") == "one")
            # A message that skips offsets, as if two publications were lost on the way.
            body = b'{"data":"four"}'
            subprocess.run(
                [
                    "redis-cli",
                    "-n",
                    "14",
                    "PUBLISH",
                    f"{prefix}:p:chat:gap",
                    f"p 4 {sub['epoch']}\n".encode() + body,
                ],
                check=True,
                capture_output=True,
            )
            push = await client.until(lambda m: "unsubscribe" in m.get("push", {}))
            assert push["push"]["unsubscribe"] == {"code": 2500, "reason": "insufficient state"}
            assert "four" not in [
                p["data"] for p in client.pubs("chat:gap")
            ]  # not delivered out of order

    run(scenario())


def config_prefix(gw: GatewayProcess) -> str:
    import yaml

    return yaml.safe_load(gw.config_path.read_text())["engine"]["prefix"]


def test_workers_share_a_port_and_a_dead_workers_presence_expires(tmp_path: Path) -> None:
    require(redis_available(), "Redis on 127.0.0.1:6379")
    with GatewayProcess(tmp_path, config(workers=2), env=ENV) as gw:
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") >= 2, 15, "both workers to listen")
        workers = [
            int(line.split("pid ")[1].rstrip(")")) for line in gw.lines if "started (pid" in line
        ]
        assert len(workers) == 2

        async def scenario() -> None:
            clients = [Raw(gw, f"user{i}") for i in range(12)]
            for client in clients:
                await client.__aenter__()
                await client.subscribe("chat:workers", 2)
            try:
                stats = api(gw, "presence_stats", channel="chat:workers")["result"]
                assert stats["num_clients"] == 12
                # Connections were spread over both workers (SO_REUSEPORT).
                served = {w: 0 for w in ("w1", "w2")}
                for line in gw.lines:
                    if "101 GET /connection/websocket" in line:
                        served[line.split()[3]] += 1
                assert served["w1"] > 0 and served["w2"] > 0, served
                api(gw, "publish", channel="chat:workers", data="to all")
                for client in clients:
                    await client.until(
                        lambda m: m.get("push", {}).get("pub", {}).get("data") == "to all"
                    )
                # kill -9 one worker: its clients' presence disappears within presence_ttl.
                os.kill(workers[0], signal.SIGKILL)
                deadline = time.monotonic() + 10
                while True:
                    count = api(gw, "presence_stats", channel="chat:workers")["result"][
                        "num_clients"
                    ]
                    if count < 12:
                        break
                    assert time.monotonic() < deadline, "presence of the dead worker did not expire"
                    await asyncio.sleep(0.5)
            finally:
                for client in clients:
                    try:
                        await client.__aexit__()
                    except Exception:
                        pass

        run(scenario())
        wait_until(
            lambda: "worker 1 exited" in gw.log and gw.log.count("worker 1 started") == 2,
            15,
            "the dead worker to be restarted",
        )
        assert gw.stop() == 0
        for pid in workers:
            assert (
                not os.path.exists(f"/proc/{pid}")
                or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
            )


def test_workers_need_the_redis_engine(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text("server:\n  workers: 2\n")
    result = subprocess.run(
        [os.sys.executable, "-m", "gateway", "run", "--config", str(cfg)],  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "server.workers: 2 workers need engine.kind: redis" in result.stderr


def test_redis_outage_loses_no_acknowledged_publication(tmp_path: Path) -> None:
    require(RedisServer.installed(), "redis-server is not installed")
    require((NODE_DIR / "node_modules" / "centrifuge").is_dir(), "the centrifuge SDK in tests/node")
    server = RedisServer(tmp_path)
    server.persistent = True
    server.start()
    try:
        with GatewayProcess(tmp_path, config(url=server.url), env=ENV) as gw:
            gw.wait_ready()
            client = SdkClient("outage")
            try:
                client.send(
                    op="connect",
                    url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
                    token=token("o", ttl=600),
                )
                client.wait(lambda e: e["event"] == "connected")
                client.send(op="subscribe", channel="chat:outage")
                client.wait(lambda e: e["event"] == "subscribed")
                acked: list[int] = []
                failures: list[float] = []
                stop = threading.Event()

                def publisher() -> None:
                    i = 0
                    while not stop.is_set():
                        started = time.monotonic()
                        reply = api(gw, "publish", channel="chat:outage", data=i)
                        if "result" in reply:
                            acked.append(i)
                        else:
                            assert (
                                reply["error"]["code"] == 100
                                and reply["error"]["temporary"] is True
                            )
                            failures.append(time.monotonic() - started)
                        i += 1
                        time.sleep(0.02)

                thread = threading.Thread(target=publisher)
                thread.start()
                time.sleep(1.0)
                server.kill()
                wait_until(
                    lambda: (gw.ready_state() or {}).get("broker", {}).get("state") == "down",
                    10,
                    "down",
                )
                time.sleep(1.0)
                server.start()  # same port, same data directory
                wait_until(
                    lambda: (gw.ready_state() or {}).get("broker", {}).get("state") == "up",
                    20,
                    "up",
                )
                time.sleep(1.0)
                stop.set()
                thread.join(10)
                assert failures, "no publish failed during the outage"
                assert max(failures) < 1.0, "publishes during the outage must fail fast"
                last = acked[-1]
                client.wait(lambda e: e["event"] == "publication" and e["data"] == last, timeout=20)
                received = {e["data"] for e in client.of("publication", channel="chat:outage")}
                missing = sorted(set(acked) - received)
                assert not missing, (
                    f"acknowledged but never delivered: {missing}\n"
                    + "\n".join(str(e) for e in client.events if e["event"] != "publication")
                    + "\n"
                    + "\n".join(line for line in gw.lines if "access" not in line)[-4000:]
                )
            finally:
                client.close()
    finally:
        server.kill()
