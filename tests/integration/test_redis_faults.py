"""The Redis engine under faults an operator meets: Redis restarted under load, a worker
restarted while Redis refuses it, server-side subscribers across a Redis restart. Each test runs
its own redis-server (on a free port, with its own directory) so that it can stop it."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from support.procs import GatewayProcess, standin_command, wait_until
from support.realtime import SECRET, token
from support.redis import RedisServer
from support.sdk import NODE_DIR, SdkClient
from support.tcpproxy import TcpForwarder

API_KEY = "faults-api-key"
ENV = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}


def config(*urls: str, **server: Any) -> dict[str, Any]:
    return {
        "next": {"dir": ".", "command": standin_command()},
        "server": server,
        "engine": {
            "kind": "redis",
            "redis_urls": list(urls),
            "prefix": f"faults-{secrets.token_hex(4)}",
        },
        "realtime": {
            "namespaces": {
                "feed": {
                    "history_size": 10000,
                    "history_ttl": 600,
                    "force_recovery": True,
                }
            }
        },
    }


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A persistent redis-server of this test's own (appendonly, fsync always)."""
    require(RedisServer.installed(), "redis-server is not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.persistent = True
    server.start()
    try:
        yield server
    finally:
        server.kill()


def publish(gw: GatewayProcess, channel: str, data: Any, timeout: float = 5.0) -> dict[str, Any]:
    """One server API publish on a fresh connection: the JSON reply (result or error)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/_gateway/api/publish",
            body=json.dumps({"channel": channel, "data": data}),
            headers={"X-API-Key": API_KEY},
        )
        resp = conn.getresponse()
        reply: dict[str, Any] = json.loads(resp.read())
        return reply
    finally:
        conn.close()


def broker_state(gw: GatewayProcess) -> str | None:
    return (gw.ready_state() or {}).get("broker", {}).get("state")


def test_a_publish_cut_by_a_redis_crash_leaves_no_unclosed_pipeline(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis frozen (as during SHUTDOWN SAVE's blocking save), a publish sent to it, then Redis
    # gone: the publish's pipeline had taken a connection for its script check and kept it.
    with GatewayProcess(tmp_path, config(redis_server.url), env=ENV) as gw:
        gw.wait_ready()
        assert "result" in publish(gw, "feed:cut", "before")
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        replies: list[dict[str, Any]] = []
        thread = threading.Thread(target=lambda: replies.append(publish(gw, "feed:cut", "cut")))
        thread.start()
        time.sleep(0.5)
        redis_server.kill()
        thread.join(10)
        assert replies and replies[0]["error"]["code"] == 100, replies
        redis_server.start()
        wait_until(lambda: broker_state(gw) == "up", 20, "the broker to be up again")
        for i in range(300):
            assert "result" in publish(gw, "feed:cut", i)
        assert "Unclosed" not in gw.log, "\n".join(
            line for line in gw.lines if "access" not in line
        )
        assert "Traceback" not in gw.log, gw.log


def worker_pids(gw: GatewayProcess) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the parent's log."""
    pids: dict[int, int] = {}
    for line in gw.lines:
        if "gateway.workers: worker " in line and " started (pid " in line:
            index = int(line.split("worker ")[1].split()[0])
            pids[index] = int(line.split("(pid ")[1].rstrip(")"))
    return pids


def test_a_restarted_worker_takes_connections_only_once_redis_is_connected(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis lets the surviving worker's connections be but turns new ones away: the restarted
    # worker cannot connect. It must not take a share of the port meanwhile (its publishes
    # would be refused with error 100); once Redis lets it in, it serves.
    with TcpForwarder(redis_server.port) as redis_door:
        cfg = config(f"redis://127.0.0.1:{redis_door.port}/0", workers=2)
        cfg["engine"]["ready_timeout"] = 30.0
        with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
            gw.wait_ready()
            wait_until(lambda: gw.log.count("worker serving port") == 2, 15, "both workers")
            for i in range(20):  # both workers have their pooled connection to Redis
                assert "result" in publish(gw, "feed:door", i)
            redis_door.refuse_new = True
            os.kill(worker_pids(gw)[1], signal.SIGKILL)
            wait_until(lambda: gw.log.count("worker 1 started") == 2, 10, "worker 1 restarted")
            wait_until(lambda: redis_door.refused > 0, 10, "the new worker to try Redis")
            refused = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    reply = publish(gw, "feed:door", "during")
                except ConnectionResetError:  # queued at the killed worker: not this test's
                    continue
                if "result" not in reply:
                    refused.append(reply)
            assert refused == [], f"{len(refused)} publishes refused: {refused[:3]}"
            assert gw.log.count("worker serving port") == 2  # not yet
            redis_door.refuse_new = False
            wait_until(lambda: gw.log.count("worker serving port") == 3, 15, "worker 1 to serve")
            assert "engine ready in" in gw.log
            served = {"w1": 0, "w2": 0}
            for i in range(40):
                assert "result" in publish(gw, "feed:door", i)
            after = gw.log.split("worker serving port")[-1]
            for line in after.splitlines():
                if "POST /_gateway/api/publish" in line:
                    served[line.split()[3]] += 1
            assert served["w1"] > 0, served  # the restarted worker takes its share again
            assert "engine not ready" not in gw.log
            assert "Traceback" not in gw.log, gw.log


def test_server_side_subscribers_reconnect_with_3010_and_recover_after_a_redis_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A subscription from the token's `channels` claim cannot be subscribed again by the SDK:
    # after a Redis restart (what pub/sub carried meanwhile may be lost) its client is
    # disconnected with 3010 and recovers on reconnect, from Redis's persisted history.
    require((NODE_DIR / "node_modules" / "centrifuge").is_dir(), "the centrifuge SDK in tests/node")
    with GatewayProcess(tmp_path, config(redis_server.url), env=ENV) as gw:
        gw.wait_ready()
        client = SdkClient("server-side")
        try:
            client.send(
                op="connect",
                url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
                token=token("ss", ttl=600, channels=["feed:server"]),
            )
            client.wait(lambda e: e["event"] == "subscribed" and e["channel"] == "feed:server")
            acked: list[int] = []
            stop = threading.Event()

            def publisher() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        if "result" in publish(gw, "feed:server", i):
                            acked.append(i)
                    except OSError:
                        pass
                    i += 1
                    time.sleep(0.02)

            thread = threading.Thread(target=publisher)
            thread.start()
            try:
                time.sleep(1.0)
                redis_server.shutdown_save()
                time.sleep(0.5)
                redis_server.start()  # same port, same directory: the history is back
                wait_until(lambda: broker_state(gw) == "up", 20, "the broker to be up again")
                time.sleep(1.5)
            finally:
                stop.set()
                thread.join(10)
            last = acked[-1]
            client.wait(lambda e: e["event"] == "publication" and e["data"] == last, timeout=20)
            reconnect = client.wait(lambda e: e["event"] == "connecting" and e["code"] == 3010)
            assert reconnect["reason"] == "insufficient state"
            again = client.of("subscribed", channel="feed:server")[1:]
            assert again and all(e["wasRecovering"] and e["recovered"] for e in again), again
            assert client.of("unsubscribed") == []
            received = [e["data"] for e in client.of("publication", channel="feed:server")]
            assert received == sorted(set(received)), "duplicates or reordering"
            missing = sorted(set(acked) - set(received))
            assert not missing, f"acknowledged but never delivered: {missing}"
            assert len(acked) > 50 and acked[0] == 0
        finally:
            client.close()
        assert "Traceback" not in gw.log, gw.log


def test_a_pubsub_connection_cut_and_restored_at_once_still_makes_subscribers_recover(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A blip (or a Redis restart quicker than redis-py's retries): the pub/sub connection is
    # cut and Redis takes a new one at once. redis-py would reconnect and subscribe again by
    # itself, and the engine never knew: whatever other processes published in between was
    # missed here, silently on a channel that then stays quiet. The engine must see the cut
    # and have the subscribers recover (3010 for a server-side subscription).
    require((NODE_DIR / "node_modules" / "centrifuge").is_dir(), "the centrifuge SDK in tests/node")
    with TcpForwarder(redis_server.port) as link:
        cfg = config(f"redis://127.0.0.1:{link.port}/0")
        with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
            gw.wait_ready()
            client = SdkClient("blip")
            try:
                client.send(
                    op="connect",
                    url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
                    token=token("blip", ttl=600, channels=["feed:blip"]),
                )
                client.wait(lambda e: e["event"] == "subscribed" and e["channel"] == "feed:blip")
                assert "result" in publish(gw, "feed:blip", "before")
                client.wait(lambda e: e["event"] == "publication" and e["data"] == "before")
                link.cut()
                reconnect = client.wait(lambda e: e["event"] == "connecting" and e["code"] != 0)
                assert reconnect["code"] == 3010, reconnect
                again = client.wait(
                    lambda e: e["event"] == "subscribed" and e.get("wasRecovering"), timeout=15
                )
                assert again["recovered"] is True
                wait_until(lambda: broker_state(gw) == "up", 10, "the broker to be up")
                reply = publish(gw, "feed:blip", "after")
                assert "result" in reply, (reply, gw.log[-3000:])
                client.wait(lambda e: e["event"] == "publication" and e["data"] == "after")
                assert [e["data"] for e in client.of("publication")] == ["before", "after"]
            finally:
                client.close()
        assert "redis shard 0 (" in gw.log and "failed" in gw.log
        assert "Traceback" not in gw.log, gw.log


def test_a_publish_redis_ran_but_answered_too_late_is_not_published_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis ran the publish, but its answer did not come back within the socket timeout (5 s):
    # the publish fails (error 100, temporary: the caller cannot know). Retried by redis-py on
    # a new connection, it used to be published a second time, under a new offset: every
    # subscriber received it twice.
    require((NODE_DIR / "node_modules" / "centrifuge").is_dir(), "the centrifuge SDK in tests/node")
    with TcpForwarder(redis_server.port) as link:
        cfg = config(f"redis://127.0.0.1:{link.port}/0")
        with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
            gw.wait_ready()
            client = SdkClient("once")
            try:
                client.send(
                    op="connect",
                    url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
                    token=token("once", ttl=600, channels=["feed:once"]),
                )
                client.wait(lambda e: e["event"] == "subscribed" and e["channel"] == "feed:once")
                assert "result" in publish(gw, "feed:once", "before")
                client.wait(lambda e: e["event"] == "publication" and e["data"] == "before")
                link.hold_replies(b"*3\r\n:")  # the publish script's [offset, epoch, 0]
                try:
                    reply = publish(gw, "feed:once", "late", timeout=20)
                finally:
                    link.release_replies()
                assert reply.get("error", {}).get("code") == 100, reply
                assert "result" in publish(gw, "feed:once", "after")
                client.wait(lambda e: e["event"] == "publication" and e["data"] == "after")
                received = [e["data"] for e in client.of("publication")]
                assert received.count("late") == 1, received  # it was published: once
            finally:
                client.close()
        assert "Traceback" not in gw.log, gw.log
