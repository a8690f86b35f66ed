"""The chaos soak (issue 15): an operator's worst afternoon, in about a minute.

``--workers 2`` on two persistent redis-servers of its own (appendonly, fsync always; two
shards), 30 SDK clients (15 with client-side subscriptions, 15 subscribed server-side by their
token's ``channels`` claim) on two recoverable channels (one per shard), ~40 server API
publications/s with the acknowledged ones recorded, GETs and POSTs through the proxy on a
keep-alive connection, and faults 8 s apart: kill -9 of worker 1, kill -9 of the Next.js child,
a Redis restart (SHUTDOWN SAVE, then the same port and directory), the other shard down for
3 s, kill -9 of worker 2.

It fails on any acknowledged publication a client never received, any duplicate or reordered
delivery, any recovery with ``recovered: false``, a server-side subscription dropped, a
traceback or an unclosed Redis client in the gateway's log, and any HTTP failure other than
503 + Retry-After or a keep-alive connection cut by the kill -9 of the worker that held it.

Run it alone, with its figures: ``pytest -m soak -s``; skip it: ``pytest -m 'not soak'``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from support.procs import GatewayProcess, standin_command, wait_until
from support.realtime import SECRET, token
from support.redis import RedisServer
from support.sdk import NODE_DIR, SdkSwarm

from gateway.realtime.redis import jump_hash

pytestmark = pytest.mark.soak

API_KEY = "soak-api-key"
CLIENTS = 30  # even ids: client-side subscriptions; odd ids: server-side (token claim)
PUBLISH_EVERY = 0.05  # s, to each of the two channels: ~40 publications/s
FAULT_EVERY = 8.0  # s
TAIL = 8.0  # s of load after the last fault


def channel_on(shard: int, shards: int = 2) -> str:
    """A channel of the soak namespace that lives on ``shard`` (the engine's hashing)."""
    i = 0
    while jump_hash(zlib.crc32(f"soak:s{shard}-{i}".encode()), shards) != shard:
        i += 1
    return f"soak:s{shard}-{i}"


def worker_pids(gw: GatewayProcess) -> dict[int, int]:
    pids: dict[int, int] = {}
    for line in gw.lines:
        if "gateway.workers: worker " in line and " started (pid " in line:
            pids[int(line.split("worker ")[1].split()[0])] = int(line.split("(pid ")[1].rstrip(")"))
    return pids


class HttpLoad:
    """GETs and POSTs through the proxy on one keep-alive connection at a time, as a browser
    would: a new connection only when the gateway closed the old one (and said so)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.worker_kills: list[float] = []
        self.stop = threading.Event()
        self.started = time.monotonic()  # failures are reported relative to it

    def _killed_worker(self, quiet_since: float, opened: float, now: float) -> str | None:
        """Whether a kill -9 of a worker explains a connection error, and how."""
        for kill in self.worker_kills:
            if quiet_since < kill <= now:  # opened or last answered before the kill
                return "keep-alive connection cut by a worker kill"
            if opened == quiet_since and kill <= opened < kill + 1.0:
                # The kernel queued it at the dying worker's socket before the socket was gone
                # (SO_REUSEPORT: each worker has its own queue): reset, nothing answered.
                return "new connection reset by the dying worker"
        return None

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        opened = quiet_since = 0.0  # when the connection was opened, last answered
        i = 0
        while not self.stop.is_set():
            i += 1
            post = i % 2 == 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.connect()
                    opened = quiet_since = time.monotonic()
                conn.request(
                    "POST" if post else "GET",
                    "/form" if post else "/",
                    body=b"x" * 2048 if post else None,
                    headers={"Accept": "application/json"},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                conn = None
                now = time.monotonic()
                explained = self._killed_worker(quiet_since, opened, now)
                if explained:
                    self.counts[explained] += 1
                else:
                    kind = f"{type(e).__name__} ({'POST' if post else 'GET'})"
                    self.counts[kind] += 1
                    self.failures.append(
                        f"{now - self.started:.3f} s {kind}: {e} (connection opened at "
                        f"{opened - self.started:.3f} s, last answered at "
                        f"{quiet_since - self.started:.3f} s)"
                    )
                continue
            quiet_since = time.monotonic()
            if 200 <= resp.status < 300:
                self.counts["2xx"] += 1
            elif resp.status == 503 and resp.headers.get("Retry-After"):
                self.counts["503 + Retry-After"] += 1
            else:
                kind = f"{resp.status} ({'POST' if post else 'GET'})"
                self.counts[kind] += 1
                self.failures.append(
                    f"{quiet_since - self.started:.3f} s {kind} {dict(resp.headers)}"
                )
            if resp.will_close:  # Connection: close
                conn.close()
                conn = None
                self.counts["closed by Connection: close"] += 1
            time.sleep(0.01)
        if conn is not None:
            conn.close()


class Publisher:
    """Publishes 0, 1, 2... to every channel through the server API; records what was
    acknowledged (an offset given back)."""

    def __init__(self, port: int, channels: list[str]) -> None:
        self.port = port
        self.channels = channels
        self.acked: dict[str, list[int]] = {c: [] for c in channels}
        self.refused: list[tuple[float, str]] = []  # when, which channel
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()

    def publish(self, channel: str, data: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                "POST",
                "/_gateway/api/publish",
                body=json.dumps({"channel": channel, "data": data}),
                headers={"X-API-Key": API_KEY},
            )
            reply = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.counts[f"not answered: {type(e).__name__}"] += 1
            return
        finally:
            conn.close()
        if "result" in reply:
            self.acked[channel].append(data)
            self.counts["acknowledged"] += 1
        else:
            error = reply["error"]
            self.counts[f"refused: error {error['code']} temporary={error.get('temporary')}"] += 1
            self.refused.append((time.monotonic(), channel))

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            for channel in self.channels:
                self.publish(channel, i)
            i += 1
            next_at += PUBLISH_EVERY
            time.sleep(max(0.0, next_at - time.monotonic()))


def test_chaos_soak_loses_nothing(tmp_path: Path) -> None:
    require(RedisServer.installed(), "redis-server is not installed")
    require((NODE_DIR / "node_modules" / "centrifuge").is_dir(), "npm ci in tests/node")
    started = time.monotonic()
    with ExitStack() as stack:
        shards = []
        for n in range(2):
            directory = tmp_path / f"redis{n}"
            directory.mkdir()
            server = RedisServer(directory)
            server.persistent = True
            server.start()
            stack.callback(server.kill)
            shards.append(server)
        channels = [channel_on(0), channel_on(1)]
        cfg = {
            "next": {
                "dir": ".",
                "command": standin_command(),
                "restart": {"backoff_initial": 0.5, "backoff_max": 2.0},
            },
            "server": {"workers": 2},
            "log": {"access": False},
            "engine": {"kind": "redis", "redis_urls": [s.url for s in shards], "prefix": "soak"},
            "realtime": {
                "namespaces": {
                    "soak": {"history_size": 50000, "history_ttl": 600, "force_recovery": True}
                }
            },
        }
        env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
        gw = stack.enter_context(GatewayProcess(tmp_path, cfg, env=env))
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") == 2, 20, "both workers")

        swarm = stack.enter_context(SdkSwarm())
        url = f"ws://127.0.0.1:{gw.port}/connection/websocket"
        for c in range(CLIENTS):
            if c % 2:
                swarm.connect(c, url, token(f"s{c}", ttl=3600, channels=channels), [])
            else:
                swarm.connect(c, url, token(f"c{c}", ttl=3600), channels)
        wait_until(
            lambda: all(len(swarm.of(c, "subscribed")) >= 2 for c in range(CLIENTS)),
            30,
            "every client subscribed to both channels",
        )

        publisher = Publisher(gw.port, channels)
        http_load = HttpLoad(gw.port)
        threads = [threading.Thread(target=t.run) for t in (publisher, http_load)]
        for thread in threads:
            thread.start()

        def kill_worker(index: int) -> None:
            wait_until(lambda: gw.log.count("worker serving port") >= 2 + index - 1, 20, "workers")
            http_load.worker_kills.append(time.monotonic())
            os.kill(worker_pids(gw)[index], signal.SIGKILL)

        # Publishes may be refused (error 100, temporary) while a channel's shard is down and
        # until the engine has reconnected (within 2 s of Redis: its backoff cap); never
        # elsewhere: a restarted worker waits for Redis before it takes connections.
        outages: dict[str, list[tuple[float, float]]] = {c: [] for c in channels}

        def redis_down(shard: int, seconds: float) -> None:
            began = time.monotonic()
            shards[shard].shutdown_save()
            time.sleep(seconds)
            shards[shard].start()  # same port, same directory
            outages[channels[shard]].append((began, time.monotonic() + 4.0))

        faults: list[tuple[str, Callable[[], None]]] = [
            ("kill -9 worker 1", lambda: kill_worker(1)),
            ("kill -9 the Next.js child", lambda: os.kill(gw.child_pid(), signal.SIGKILL)),
            ("Redis restart (SHUTDOWN SAVE, start)", lambda: redis_down(0, 0.0)),
            ("second shard down 3 s", lambda: redis_down(1, 3.0)),
            ("kill -9 worker 2", lambda: kill_worker(2)),
        ]
        load_started = http_load.started = time.monotonic()
        timeline = []
        try:
            for n, (name, fault) in enumerate(faults):
                time.sleep(max(0.0, load_started + 4 + n * FAULT_EVERY - time.monotonic()))
                timeline.append(f"{time.monotonic() - load_started:5.1f} s  {name}")
                fault()
            time.sleep(TAIL)
        finally:
            publisher.stop.set()
            http_load.stop.set()
            for thread in threads:
                thread.join(15)
        load_seconds = time.monotonic() - load_started

        def delivered() -> bool:
            return all(
                not acked or acked[-1] in swarm.received(c, channel)
                for c in range(CLIENTS)
                for channel, acked in publisher.acked.items()
            )

        try:
            wait_until(delivered, 30, "every client to receive the last publications")
        except AssertionError:
            pass  # counted as lost below, with the rest of the figures

        figures = count(swarm, publisher.acked)
        (tmp_path / "gateway.log").write_text(gw.log)
        (tmp_path / "sdk-events.json").write_text(json.dumps(swarm.events))
        report = "\n".join(
            [
                f"chaos soak: {CLIENTS} SDK clients, {load_seconds:.0f} s of load, faults:",
                *(f"  {line}" for line in timeline),
                f"publishes: {dict(publisher.counts)}",
                f"acknowledged per channel: { {c: len(a) for c, a in publisher.acked.items()} }",
                *(f"{kind}: {dict(row)}" for kind, row in figures.items()),
                f"http: {dict(http_load.counts)}",
                *http_load.failures[:20],
                f"whole test: {time.monotonic() - started:.0f} s (gateway log in {tmp_path})",
            ]
        )
        print(report)
        problems = [
            f"{kind}: {key} = {row[key]}"
            for kind, row in figures.items()
            for key in ("lost", "duplicates", "out of order", "recovered: false", "dropped subs")
            if row[key]
        ]
        assert not problems, f"{problems}\n{report}"
        assert not http_load.failures, report
        assert http_load.counts["503 + Retry-After"] > 0, report  # the child restart was seen
        assert publisher.refused, report  # the Redis outages were seen
        for at, channel in publisher.refused:
            assert any(began <= at <= end for began, end in outages[channel]), (
                f"a publish to {channel} refused at {at - load_started:.1f} s, "
                f"outside its shard's outage\n{report}"
            )
        for kind in ("client-side", "server-side"):
            assert figures[kind]["reconnects"] > 0, report  # the worker kills were felt
        assert figures["server-side"]["codes"].get("3010", 0) > 0, report
        log = gw.log
        for trace in ("Traceback", "Unclosed"):
            assert trace not in log, "\n".join(
                line for line in gw.lines if trace in line or "ERROR" in line
            )
        assert "worker 1 exited" in log and "worker 2 exited" in log
        assert "redis shard 0" in log and "redis shard 1" in log


def count(swarm: SdkSwarm, acked: dict[str, list[int]]) -> dict[str, Counter[Any]]:
    """Per kind of subscription: what was lost, doubled, reordered, not recovered."""
    figures: dict[str, Counter[Any]] = {"client-side": Counter(), "server-side": Counter()}
    codes: dict[bool, Counter[str]] = {False: Counter(), True: Counter()}  # server-side?
    for c in range(CLIENTS):
        row = figures["server-side" if c % 2 else "client-side"]
        row["clients"] += 1
        for channel, acknowledged in acked.items():
            received = swarm.received(c, channel)
            seen: set[int] = set()
            top = -1
            for data in received:
                if data in seen:
                    row["duplicates"] += 1
                elif data < top:
                    row["out of order"] += 1
                seen.add(data)
                top = max(top, data)
            row["lost"] += len(set(acknowledged) - seen)
            row["received"] += len(received)
            row["delivered, not acknowledged"] += len(seen - set(acknowledged))
        subscribed = swarm.of(c, "subscribed")
        row["recoveries"] += sum(1 for e in subscribed if e["wasRecovering"])
        row["recovered: false"] += sum(
            1 for e in subscribed if e["wasRecovering"] and not e["recovered"]
        )
        row["dropped subs"] += len(swarm.of(c, "unsubscribed"))  # the SDK gave up on one
        # Client-side subscriptions subscribing again on their own connection (2500 after a
        # Redis reconnection), and reconnections with their codes (code 0: connect() itself).
        row["resubscribes"] += sum(1 for e in swarm.of(c, "subscribing") if e["code"] != 0)
        connecting = [e for e in swarm.of(c, "connecting") if e["code"] != 0]
        row["reconnects"] += len(connecting)
        for e in connecting:
            codes[row is figures["server-side"]][str(e["code"])] += 1
    for side, row in ((False, figures["client-side"]), (True, figures["server-side"])):
        row["codes"] = dict(codes[side])
    return figures
