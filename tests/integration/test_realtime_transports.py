"""The realtime endpoints besides the WebSocket, spoken raw (as a browser's fetch or EventSource
does): bidirectional emulation (http_stream, sse + the emulation endpoint), the unidirectional
ones (uni_sse, uni_http_stream, uni_websocket), their refusals with exact status codes, and an
emulation POST that reaches another process than the one holding the stream (Redis)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from conftest import require
from support.procs import GatewayProcess, http_request, standin_command, wait_until
from support.realtime import SECRET, token
from support.redis import redis_available
from support.streams import Stream, emulate

API_KEY = "transports-api-key"
ENV = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}


def config(**extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "next": {"dir": ".", "command": standin_command()},
        "realtime": {
            "namespaces": {
                "chat": {
                    "history_size": 100,
                    "history_ttl": 300,
                    "force_recovery": True,
                    "allow_publish": True,
                    "allow_history": True,
                }
            },
            "transports": {"max_request_size": 4096, "emulation_timeout": 0.5},
        },
    }
    for key, value in extra.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("transports"), config(), env=ENV) as gateway:
        gateway.wait_ready()
        yield gateway


def publish(gw: GatewayProcess, channel: str, data: Any) -> None:
    reply = gw.api("publish", API_KEY, channel=channel, data=data)
    assert "result" in reply, reply


def connect_command(user: str = "alice", **claims: Any) -> str:
    return json.dumps({"id": 1, "connect": {"token": token(user, **claims)}})


def open_emulated(gw: GatewayProcess, endpoint: str, user: str = "alice") -> tuple[Stream, dict]:
    if endpoint == "sse":
        stream = Stream(gw.port, "sse", query={"cf_connect": connect_command(user)})
    else:
        stream = Stream(gw.port, endpoint, body=connect_command(user))
    assert stream.status == 200
    reply = stream.next()
    assert reply is not None and reply["id"] == 1, reply
    return stream, reply["connect"]


# -- bidirectional emulation ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http_stream", "sse"])
def test_emulated_session_subscribes_publishes_and_receives(
    gw: GatewayProcess, endpoint: str
) -> None:
    stream, connected = open_emulated(gw, endpoint)
    try:
        assert stream.resp.headers["X-Accel-Buffering"] == "no"
        assert "no-store" in stream.resp.headers["Cache-Control"]
        assert "Content-Encoding" not in stream.resp.headers
        expected = "text/event-stream" if endpoint == "sse" else "application/x-ndjson"
        assert stream.resp.headers["Content-Type"].startswith(expected)
        session, node = connected["session"], connected["node"]
        assert len(session) == 32 and len(node) == 32 and connected["pong"] is True
        channel = f"chat:{endpoint}"
        assert emulate(gw.port, session, node, {"id": 2, "subscribe": {"channel": channel}}) == 204
        assert stream.until(lambda m: m.get("id") == 2)["subscribe"]["recoverable"] is True
        publish(gw, channel, {"n": 1})
        push = stream.until(lambda m: "push" in m)["push"]
        assert push["channel"] == channel and push["pub"]["data"] == {"n": 1}
        assert push["pub"]["offset"] == 1
        # A client publish and a history call, each a POST; their replies come on the stream.
        command = {"id": 3, "publish": {"channel": channel, "data": "mine"}}
        assert emulate(gw.port, session, node, command) == 204
        stream.until(lambda m: m.get("id") == 3)
        command = {"id": 4, "history": {"channel": channel, "limit": 10}}
        assert emulate(gw.port, session, node, command) == 204
        history = stream.until(lambda m: m.get("id") == 4)["history"]
        assert [p["data"] for p in history["publications"]] == [{"n": 1}, "mine"]
    finally:
        stream.close()


@pytest.mark.parametrize("endpoint", ["http_stream", "sse"])
def test_server_disconnect_ends_the_stream_after_a_disconnect_push(
    gw: GatewayProcess, endpoint: str
) -> None:
    stream, connected = open_emulated(gw, endpoint, user=f"leaving-{endpoint}")
    try:
        reply = gw.api(
            "disconnect",
            API_KEY,
            user=f"leaving-{endpoint}",
            disconnect={"code": 3011, "reason": "force reconnect"},
        )
        assert "result" in reply
        push = stream.until(lambda m: "push" in m)["push"]
        assert push["disconnect"]["code"] == 3011
        assert stream.next() is None  # the response ended: the SDK reconnects
        # The session is gone: its commands get 404, the SDK's cue that it must reconnect.
        ping = {"id": 9, "presence_stats": {"channel": "chat:x"}}
        assert emulate(gw.port, connected["session"], connected["node"], ping) == 404
    finally:
        stream.close()


def test_a_client_that_goes_away_leaves_no_session(gw: GatewayProcess) -> None:
    stream, connected = open_emulated(gw, "http_stream", user="vanishing")
    stream.close()
    command = {"id": 2, "subscribe": {"channel": "chat:gone"}}
    wait_until(
        lambda: emulate(gw.port, connected["session"], connected["node"], command) == 404,
        5,
        "the session to be forgotten",
    )


def test_emulated_session_with_a_bad_token_is_told_and_closed(gw: GatewayProcess) -> None:
    body = json.dumps({"id": 1, "connect": {"token": "not-a-jwt"}})
    stream = Stream(gw.port, "http_stream", body=body)
    try:
        assert stream.status == 200
        push = stream.until(lambda m: "push" in m)["push"]
        assert push["disconnect"]["code"] == 3500
        assert stream.next() is None
    finally:
        stream.close()


# -- refusals ---------------------------------------------------------------------------------


def _request(
    gw: GatewayProcess, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    status, head, payload = http_request(
        gw.url(path), method, headers={"Content-Type": "application/json", **headers}, body=body
    )
    try:
        parsed = json.loads(payload) if payload else {}
    except ValueError:
        parsed = {"raw": payload.decode(errors="replace")}
    if status == 405:
        assert "POST" in head["Allow"] or "GET" in head["Allow"]
    return status, parsed


def _emulation_body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


BAD_REQUESTS = [
    # (method, path, body, extra headers, status, error)
    ("GET", "/connection/http_stream", None, {}, 405, "method_not_allowed"),
    ("PUT", "/connection/sse", b"x", {}, 405, "method_not_allowed"),
    ("POST", "/connection/http_stream", b"", {}, 400, "bad_request"),
    ("POST", "/connection/http_stream", b"{garbage", {}, 400, "bad_request"),
    ("POST", "/connection/http_stream", b'{"id":1,"connect":NaN}', {}, 400, "bad_request"),
    ("POST", "/connection/http_stream", b"\xff\xfe", {}, 400, "bad_request"),
    ("POST", "/connection/http_stream", b"[" * 5000, {}, 413, "too_large"),
    ("GET", "/connection/sse", None, {}, 400, "bad_request"),
    ("GET", "/connection/sse?cf_connect=%7Bnope", None, {}, 400, "bad_request"),
    ("GET", "/connection/emulation", None, {}, 405, "method_not_allowed"),
    ("POST", "/connection/emulation", b"not json", {}, 400, "bad_request"),
    ("POST", "/connection/emulation", b"[1]", {}, 400, "bad_request"),
    (
        "POST",
        "/connection/emulation",
        _emulation_body(node="a" * 32, data="{}"),
        {},
        400,
        "bad_request",
    ),
    (
        "POST",
        "/connection/emulation",
        _emulation_body(session="a" * 32, node="b" * 32, data=7),
        {},
        400,
        "bad_request",
    ),
    (
        "POST",
        "/connection/emulation",
        _emulation_body(session="../x", node="b" * 32, data="{}"),
        {},
        404,
        "no_session",
    ),
    (
        "POST",
        "/connection/emulation",
        _emulation_body(session="a" * 32, node="b" * 32, data="x" * 5000),
        {},
        413,
        "too_large",
    ),
    (
        "POST",
        "/connection/emulation",
        b"\x08\x01",
        {"Content-Type": "application/octet-stream"},
        415,
        "unsupported",
    ),
    ("GET", "/connection/uni_sse?cf_connect=%5B1%5D", None, {}, 400, "bad_request"),
    ("POST", "/connection/uni_http_stream", b"{nope", {}, 400, "bad_request"),
    ("GET", "/connection/uni_http_stream", None, {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error"),
    BAD_REQUESTS,
    ids=[f"{r[0]} {r[1][:40]} {r[4]}" for r in BAD_REQUESTS],
)
def test_bad_requests_get_exact_codes(
    gw: GatewayProcess,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    got, payload = _request(gw, method, path, body, **headers)
    assert (got, payload.get("error")) == (status, error), payload
    assert "Traceback" not in json.dumps(payload)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/connection/http_stream", b'{"id":1,"connect":{}}'),
        ("GET", "/connection/sse?cf_connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D", None),
        ("POST", "/connection/emulation", b"{}"),
        ("GET", "/connection/uni_sse", None),
    ],
)
def test_other_sites_pages_are_refused(
    gw: GatewayProcess, method: str, path: str, body: bytes | None
) -> None:
    """A page of another site (its Origin) may not open a session with the user's cookies or
    post commands: 403, as the WebSocket refuses it. The gateway's own origin may."""
    got, payload = _request(gw, method, path, body, Origin="https://evil.example")
    assert (got, payload.get("error")) == (403, "forbidden")
    if path.startswith("/connection/emulation"):
        got, _ = _request(gw, method, path, body, Origin=f"http://127.0.0.1:{gw.port}")
        assert got == 400  # past the origin check: the body is not an emulation request


def test_unknown_session_and_node(gw: GatewayProcess) -> None:
    stream, connected = open_emulated(gw, "http_stream", user="known")
    try:
        # This process, a session it never had: 404. A node nobody listens on: 404 at once.
        assert emulate(gw.port, secrets.token_hex(16), connected["node"], {"id": 2}) == 404
        started = time.monotonic()
        assert emulate(gw.port, connected["session"], secrets.token_hex(16), {"id": 2}) == 404
        assert time.monotonic() - started < 0.4  # no wait for an answer (timeout is 0.5 s)
    finally:
        stream.close()


def test_everything_under_connection_is_the_gateways(gw: GatewayProcess) -> None:
    status, payload = _request(gw, "GET", "/connection/nothing-here")
    assert (status, payload.get("error")) == (404, "not_found")


def test_disabled_transports_are_not_served(tmp_path: Path) -> None:
    cfg = config()
    cfg["realtime"]["transports"].update(
        {"http_stream": False, "sse": False, "uni_sse": False, "uni_websocket": False}
    )
    with GatewayProcess(tmp_path, cfg, env=ENV) as gateway:
        gateway.wait_ready()
        for path in ("/connection/http_stream", "/connection/sse", "/connection/emulation"):
            status, _, _ = http_request(gateway.url(path), "POST", body=b"{}")
            assert status == 404, path
        status, _, _ = http_request(gateway.url("/connection/uni_http_stream"), "POST", body=b"{}")
        assert status == 200  # still on


# -- unidirectional ---------------------------------------------------------------------------


def _check_uni_connect(message: dict[str, Any] | None, channel: str) -> None:
    assert message is not None and set(message) == {"connect"}, message
    connect = message["connect"]
    assert connect["client"] and connect["session"] and "pong" not in connect
    assert "node" not in connect  # nothing to POST commands to
    assert channel in connect["subs"]


@pytest.mark.parametrize("how", ["uni_sse GET", "uni_sse POST", "uni_http_stream"])
def test_unidirectional_streams_push_the_tokens_channels(gw: GatewayProcess, how: str) -> None:
    channel = f"chat:uni-{how.replace(' ', '-')}"
    request = json.dumps({"token": token("uni", channels=[channel])})
    if how == "uni_sse GET":
        stream = Stream(gw.port, "uni_sse", query={"cf_connect": request})
    else:
        stream = Stream(gw.port, how.split()[0], body=request)
    try:
        assert stream.status == 200
        _check_uni_connect(stream.next(), channel)
        publish(gw, channel, {"hello": how})
        message = stream.until(lambda m: m != {})
        assert set(message) == {"channel", "pub"} and message["channel"] == channel
        assert message["pub"]["data"] == {"hello": how} and message["pub"]["offset"] == 1
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"token": "garbage"}, 3500),
        ({}, 3500),  # anonymous connections are not allowed here
        ({"token": token("late", ttl=-30)}, 3005),  # expired: told as expired, not invalid
        ({"token": 17}, 3501),
    ],
    ids=["bad token", "no token", "expired token", "token not a string"],
)
def test_unidirectional_refusals_are_disconnect_pushes(
    gw: GatewayProcess, request_: dict[str, Any], code: int
) -> None:
    stream = Stream(gw.port, "uni_sse", query={"cf_connect": json.dumps(request_)})
    try:
        assert stream.status == 200
        message = stream.next()
        assert message is not None and message["disconnect"]["code"] == code, message
        assert stream.next() is None
    finally:
        stream.close()


@pytest.mark.parametrize("in_query", [True, False], ids=["cf_connect", "first message"])
def test_uni_websocket_pushes_only(gw: GatewayProcess, in_query: bool) -> None:
    channel, other = f"chat:uniws-{in_query}", f"chat:uniws-{in_query}-b"
    request = json.dumps({"token": token("uniws", channels=[channel, other])})

    async def run() -> list[dict[str, Any]]:
        url = f"ws://127.0.0.1:{gw.port}/connection/uni_websocket"
        if in_query:
            url += "?cf_connect=" + urllib.parse.quote(request)
        async with websockets.connect(url, origin=f"http://127.0.0.1:{gw.port}") as ws:  # type: ignore[arg-type]
            if not in_query:
                await ws.send(request)
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send('{"id":5,"publish":{"channel":"' + channel + '","data":1}}')  # ignored
            await asyncio.get_running_loop().run_in_executor(
                None, publish, gw, channel, "over uni_websocket"
            )
            second = json.loads(await asyncio.wait_for(ws.recv(), 5))
            # Two pushes at once (a broadcast to both channels): still one per frame.
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: gw.api("broadcast", API_KEY, channels=[channel, other], data="both"),
            )
            both = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert {m["channel"] for m in both} == {channel, other}
            return [first, second]

    first, second = asyncio.run(run())
    _check_uni_connect(first, channel)
    assert set(second) == {"channel", "pub"} and second["channel"] == channel
    assert second["pub"]["data"] == "over uni_websocket" and second["pub"]["offset"] == 1


# -- across processes -------------------------------------------------------------------------


def redis_config(prefix: str, **server: Any) -> dict[str, Any]:
    return config(
        server=server,
        engine={"kind": "redis", "redis_url": "redis://127.0.0.1:6379/14", "prefix": prefix},
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, ...]]:
    """Two gateway processes (two hosts, as far as they know) sharing one Redis."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    cfg = redis_config(f"emu-{secrets.token_hex(4)}")
    with (
        GatewayProcess(tmp_path_factory.mktemp("a"), cfg, env=ENV) as a,
        GatewayProcess(tmp_path_factory.mktemp("b"), cfg, env=ENV) as b,
    ):
        a.wait_ready()
        b.wait_ready()
        yield a, b


def test_emulation_post_to_another_process_reaches_the_session(
    pair: tuple[GatewayProcess, ...],
) -> None:
    a, b = pair
    stream, connected = open_emulated(a, "sse", user="roamer")
    try:
        session, node = connected["session"], connected["node"]
        command = {"id": 2, "subscribe": {"channel": "chat:roam"}}
        assert emulate(b.port, session, node, command) == 204  # landed on B, held by A
        assert stream.until(lambda m: m.get("id") == 2)["subscribe"]["recoverable"] is True
        publish(b, "chat:roam", "from b")
        assert stream.until(lambda m: "push" in m)["push"]["pub"]["data"] == "from b"
        # A session A does not hold: B hears A say so.
        assert emulate(b.port, secrets.token_hex(16), node, {"id": 3}) == 404
        assert metric(b, "gateway_emulation_forwarded_total") >= 2
        assert metric(a, "gateway_emulation_received_total") >= 2
        assert metric(a, 'gateway_realtime_connections{transport="sse"}') == 1
    finally:
        stream.close()
    command = {"id": 4, "presence_stats": {"channel": "chat:roam"}}
    wait_until(lambda: emulate(b.port, session, node, command) == 404, 5, "the session to go")


def metric(gw: GatewayProcess, name: str) -> float:
    _, _, body = http_request(gw.url("/_gateway/metrics"))
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def test_emulation_post_times_out_when_the_owner_does_not_answer(
    pair: tuple[GatewayProcess, ...],
) -> None:
    """Something listens on a node's control channel but never answers (a process stuck):
    504 after realtime.transports.emulation_timeout."""
    from redis import Redis

    a, _ = pair
    prefix = yaml.safe_load(a.config_path.read_text())["engine"]["prefix"]
    silent = secrets.token_hex(16)
    client = Redis.from_url("redis://127.0.0.1:6379/14")
    pubsub = client.pubsub()
    pubsub.subscribe(f"{prefix}:c:{silent}")
    try:
        started = time.monotonic()
        assert emulate(a.port, secrets.token_hex(16), silent, {"id": 2}) == 504
        assert 0.4 < time.monotonic() - started < 3
        message = pubsub.get_message(timeout=1)
        while message is not None and message["type"] != "message":
            message = pubsub.get_message(timeout=1)
        assert message is not None and message["data"].startswith(b"e ")
    finally:
        pubsub.close()
        client.close()


def test_emulation_across_two_workers(tmp_path: Path) -> None:
    """--workers 2 on one port: the kernel spreads fresh connections over both workers, so
    emulation POSTs land on the worker that holds the stream and on the other one."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    cfg = redis_config(f"emu-{secrets.token_hex(4)}", workers=2)
    with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") >= 2, 15, "both workers")
        stream, connected = open_emulated(gw, "http_stream", user="spread")
        try:
            for k in range(20):  # each on a fresh connection: both workers get some
                command = {"id": 10 + k, "subscribe": {"channel": f"chat:w{k}"}}
                status = emulate(gw.port, connected["session"], connected["node"], command)
                assert status == 204, k
            ids = set()
            while len(ids) < 20:
                message = stream.until(lambda m: m.get("id", 0) >= 10)
                assert "subscribe" in message, message
                ids.add(message["id"])
        finally:
            stream.close()


def test_emulated_pongs_keep_a_session_and_their_absence_ends_it(tmp_path: Path) -> None:
    """Pings go down the stream; the client's pongs come up as emulation POSTs (what the SDK
    does). Answered, the session stays; unanswered, it ends with 3012 like a WebSocket."""
    cfg = config()
    cfg["realtime"].update({"ping_interval": 2.0, "pong_timeout": 1.0})
    with GatewayProcess(tmp_path, cfg, env=ENV) as gateway:
        gateway.wait_ready()
        stream, connected = open_emulated(gateway, "sse", user="ponger")
        try:
            for _ in range(2):
                assert stream.until(lambda m: m == {}, timeout=5) == {}
                assert emulate(gateway.port, connected["session"], connected["node"], {}) == 204
            push = stream.until(lambda m: "push" in m, timeout=10)["push"]
            assert push["disconnect"]["code"] == 3012
            assert stream.next() is None
        finally:
            stream.close()
        # A unidirectional session is not asked for pongs: pings keep coming, no 3012.
        request = json.dumps({"token": token("uni-pings")})
        uni = Stream(gateway.port, "uni_http_stream", body=request)
        try:
            assert "connect" in (uni.next() or {})
            for _ in range(2):  # past ping_interval + pong_timeout: still open
                assert uni.next(timeout=5) == {}
        finally:
            uni.close()


@pytest.mark.parametrize("transport", ["http_stream", "sse"])
def test_the_sdk_over_emulation_on_two_workers(tmp_path: Path, transport: str) -> None:
    """centrifuge-js over a fallback against --workers 2 on Redis: its POSTs land on either
    worker; subscribe, publish, presence and history all work."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    from support.sdk import SdkClient

    cfg = redis_config(f"emu-{secrets.token_hex(4)}", workers=2)
    cfg["realtime"]["namespaces"]["chat"].update({"presence": True, "allow_presence": True})
    with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") >= 2, 15, "both workers")
        client = SdkClient(f"sdk-{transport}")
        try:
            client.send(
                op="connect",
                url=f"ws://127.0.0.1:{gw.port}/connection/websocket",
                transport=transport,
                token=token("worker-sdk"),
            )
            assert client.wait(lambda e: e["event"] == "connected")["transport"] == transport
            for n in range(6):  # several subscriptions: several POSTs, spread over the workers
                client.send(op="subscribe", channel=f"chat:sdk{n}")
                client.wait(
                    lambda e, n=n: e["event"] == "subscribed" and e["channel"] == f"chat:sdk{n}"
                )
            for n in range(6):
                assert "error" not in client.call("publish", channel=f"chat:sdk{n}", data=n)
            client.wait(lambda e: e["event"] == "publication" and e["data"] == 5)
            assert sorted(p["data"] for p in client.of("publication")) == list(range(6))
            stats = client.call("presence_stats", channel="chat:sdk0")["result"]
            assert stats == {"numClients": 1, "numUsers": 1}
            history = client.call("history", channel="chat:sdk3", limit=10)["result"]
            assert [p["data"] for p in history["publications"]] == [3]
            assert client.of("disconnected") == []
        finally:
            client.close()


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the server's end of 127.0.0.1:client_port <-> :server_port is established
    (/proc/net/tcp: state 01)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
            and state == "01"
        ):
            return True
    return False


def test_a_stream_that_is_not_read_is_disconnected_as_slow(tmp_path: Path) -> None:
    """The WebSocket's slow-consumer rule on a stream: once write_queue_max_bytes is queued
    for a client that does not read, it is disconnected (3008) and its memory released."""
    import socket

    cfg = config()
    cfg["realtime"]["write_queue_max_bytes"] = 65536
    with GatewayProcess(tmp_path, cfg, env=ENV) as gw:
        gw.wait_ready()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads little
        sock.connect(("127.0.0.1", gw.port))
        body = json.dumps(
            {"id": 1, "connect": {"token": token("sloth", channels=["chat:slow"])}}
        ).encode()
        sock.sendall(
            b"POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        try:
            wait_until(
                lambda: metric(gw, 'gateway_realtime_connections{transport="http_stream"}') == 1,
                5,
                "the session",
            )
            payload = "x" * 30_000
            for _ in range(400):  # 12 MB: more than the socket buffers hold
                publish(gw, "chat:slow", payload)
                if "too slow" in gw.log:
                    break
            wait_until(lambda: "too slow" in gw.log, 10, "the slow disconnect")
            wait_until(
                lambda: metric(gw, 'gateway_realtime_connections{transport="http_stream"}') == 0,
                5,
                "the session to go",
            )
            # The connection itself (and what the gateway buffered for it) goes too, a few
            # seconds later, instead of waiting for a client that does not read.
            client_port = sock.getsockname()[1]
            assert server_side_open(gw.port, client_port)
            wait_until(
                lambda: not server_side_open(gw.port, client_port), 15, "the connection to close"
            )
        finally:
            sock.close()
