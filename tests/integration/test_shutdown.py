"""SIGTERM with work in progress: the listener closes, /_gateway/ready says draining, every
realtime client gets a 3001 disconnect push and close (spread over server.shutdown_spread), the
HTTP request in flight completes, then the child is stopped and the gateway exits 0."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import websockets
from support.procs import GatewayProcess, pid_alive, standin_command, wait_until
from support.realtime import SECRET, token
from websockets.exceptions import ConnectionClosed

CLIENTS = 20
SPREAD = 1.0


def gateway(tmp_path: Path, grace: float, spread: float = SPREAD) -> GatewayProcess:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "server": {"shutdown_grace": grace, "shutdown_spread": spread},
    }
    return GatewayProcess(tmp_path, config, env={"WS_SECRET": SECRET})


def slow_request(gw: GatewayProcess, seconds: float, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            status, _, body = gw.request(f"/slow?s={seconds}", timeout=60)
            out.update(status=status, body=body)
        except (OSError, http.client.HTTPException) as e:
            out.update(error=e)
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def connected_client(gw: GatewayProcess, n: int) -> Any:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{gw.port}/connection/websocket", origin=gw.url("").rstrip("/")
    )
    await ws.send(json.dumps({"id": 1, "connect": {"token": token(f"user{n}")}}))
    assert "connect" in json.loads(await ws.recv())
    return ws


async def last_words(ws: Any) -> tuple[list[dict[str, Any]], int, str, float]:
    """What the server says until it closes: pushes, close code and reason, and when."""
    pushes = []
    try:
        while True:
            for line in str(await ws.recv()).splitlines():
                pushes.append(json.loads(line))
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
    return pushes, code, reason, time.monotonic()


def test_sigterm_drains_sockets_and_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    with gateway(tmp_path, grace=15) as gw:
        gw.wait_ready()
        child = gw.child_pid()
        keep_alive = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        keep_alive.request("GET", "/_gateway/ready")
        first = keep_alive.getresponse()
        assert first.status == 200, first.read()
        first.read()

        async def scenario() -> list[tuple[list[dict[str, Any]], int, str, float]]:
            clients = [await connected_client(gw, n) for n in range(CLIENTS)]
            slow: dict[str, Any] = {}
            thread = slow_request(gw, 3, slow)
            await asyncio.sleep(0.5)  # the request is in flight at Next
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            words = await asyncio.gather(*(last_words(ws) for ws in clients))

            # Still draining (the slow request runs): ready says so on a kept connection...
            keep_alive.request("GET", "/_gateway/ready")
            ready = keep_alive.getresponse()
            assert ready.status == 503
            assert json.loads(ready.read())["status"] == "draining"
            # ...and nobody new gets in.
            assert gw.ready_state() is None  # connection refused

            await asyncio.to_thread(thread.join, 30)
            assert slow.get("status") == 200, slow
            assert slow["body"].startswith(b"standin"), slow
            return words

        words = asyncio.run(asyncio.wait_for(scenario(), 40))
        assert gw.proc is not None
        assert gw.proc.wait(30) == 0, gw.log
        for pushes, code, reason, _ in words:
            assert code == 3001 and reason == "shutdown", (code, reason)
            assert pushes[-1] == {
                "push": {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}
            }, pushes
        times = sorted(when for *_, when in words)
        # Spread over server.shutdown_spread, not all in one loop turn.
        assert times[-1] - times[0] > SPREAD / 2, times
        wait_until(lambda: not pid_alive(child), 10, "the Next.js child to exit")
        assert "stopped" in gw.log


def test_a_request_longer_than_the_grace_is_cut_and_the_gateway_still_exits(
    tmp_path: Path,
) -> None:
    with gateway(tmp_path, grace=1, spread=0) as gw:
        gw.wait_ready()
        slow: dict[str, Any] = {}
        thread = slow_request(gw, 30, slow)
        time.sleep(0.5)
        started = time.monotonic()
        assert gw.stop(signal.SIGTERM, timeout=30) == 0, gw.log
        assert time.monotonic() - started < 15  # the grace, then the child's stop
        thread.join(10)
        assert "status" not in slow, slow  # cut, not answered
        assert "closing 1 HTTP request(s) still running after the 1 s grace" in gw.log
        assert "Traceback" not in gw.log


def test_idle_gateway_stops_at_once(tmp_path: Path) -> None:
    with gateway(tmp_path, grace=30, spread=5) as gw:
        gw.wait_ready()
        started = time.monotonic()
        assert gw.stop(signal.SIGTERM) == 0, gw.log
        # Nothing to drain: neither the grace nor the spread is waited for.
        assert time.monotonic() - started < 5, gw.log


def test_while_draining_keep_alive_connections_close_and_the_api_says_503(
    tmp_path: Path,
) -> None:
    # bench/deploy.py found a SIGTERM under keep-alive load always took the whole grace (the
    # clients kept sending new requests on their open connections) and the server API kept
    # acknowledging publications nobody could receive any more.
    gw = gateway(tmp_path, grace=20)
    gw.env["GATEWAY_API_KEY"] = "drain-key"
    with gw:
        gw.wait_ready()
        page = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        api = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        for conn, path in ((page, "/"), (api, "/_gateway/health")):
            conn.request("GET", path)
            conn.getresponse().read()  # both connections are open and idle
        in_flight: dict[str, Any] = {}
        slow = slow_request(gw, 1.5, in_flight)  # keeps the gateway draining a while
        time.sleep(0.3)
        started = time.monotonic()
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        page.request("GET", "/")
        resp = page.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") == "close"
        resp.read()
        api.request(
            "POST",
            "/_gateway/api/publish",
            body=b'{"channel":"news","data":1}',
            headers={"X-API-Key": "drain-key"},
        )
        reply = api.getresponse()
        assert reply.status == 503 and reply.getheader("Retry-After") == "1"
        assert json.loads(reply.read())["error"] == "draining"
        slow.join(10)
        assert in_flight.get("status") == 200
        assert gw.proc.wait(20) == 0
        # Done when the request in flight was, not at the 20 s grace.
        assert time.monotonic() - started < 8, gw.log
        assert "still running after" not in gw.log


def test_sigterm_ends_emulated_streams_with_a_disconnect_push(tmp_path: Path) -> None:
    """http_stream and SSE sessions are long responses: shutdown tells them 3001 and ends
    them, and does not wait out server.shutdown_grace for them."""
    from support.streams import Stream

    with gateway(tmp_path, grace=20, spread=0.2) as gw:
        gw.wait_ready()
        connect = json.dumps({"id": 1, "connect": {"token": token("streamer")}})
        streams = [
            Stream(gw.port, "http_stream", body=connect),
            Stream(gw.port, "sse", query={"cf_connect": connect}),
        ]
        for stream in streams:
            reply = stream.next()
            assert reply is not None and "connect" in reply
        assert gw.proc is not None
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for stream in streams:
            push = stream.until(lambda m: "push" in m)["push"]
            assert push["disconnect"] == {"code": 3001, "reason": "shutdown", "reconnect": True}
            assert stream.next() is None
            stream.close()
        assert gw.proc.wait(15) == 0, gw.log
        assert time.monotonic() - started < 10  # not the 20 s grace
