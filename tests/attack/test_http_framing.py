"""Request framing through the proxy, tried as an attacker would, against a real `next start`.

Every case asserts the exact answer, that the bytes after it are never read as a request, and
(the autouse fixture) that the next ordinary request and WebSocket connect still answer
promptly and that the gateway's log holds no traceback.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from support.procs import GatewayProcess
from support.rawhttp import RawConnection, exchange
from support.realtime import SECRET, token

# A request that, if the gateway ever parsed the bytes after a refused or early-answered
# request as a new one, would show up as a second response.
SMUGGLED = b"DELETE /api/echo?smuggled=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(scope="module")
def gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": str(next_build)},
        "proxy": {"body_timeout": 1.5},
        "server": {"max_body_size": 4 * 1024 * 1024},
    }
    env = {"WS_SECRET": SECRET}
    with GatewayProcess(tmp_path_factory.mktemp("attack-http"), config, env=env) as gateway:
        gateway.wait_ready(60)
        yield gateway


@pytest.fixture(autouse=True)
def still_serving(gw: GatewayProcess) -> Iterator[None]:
    yield
    started = time.monotonic()
    status, _, _ = gw.request("/about", timeout=5)
    assert status == 200 and time.monotonic() - started < 2.0, "ordinary request slowed down"

    async def connect() -> dict[str, object]:
        url = f"ws://127.0.0.1:{gw.port}/connection/websocket"
        async with websockets.connect(url, origin=f"http://127.0.0.1:{gw.port}") as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"id": 1, "connect": {"token": token()}}))
            reply: dict[str, object] = json.loads(await ws.recv())
            return reply

    reply = asyncio.run(asyncio.wait_for(connect(), 2.0))
    assert "connect" in reply, reply
    assert "Traceback" not in gw.log


def echo(body: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(body)
    return parsed


def head(method: str, path: str, *lines: str, version: str = "HTTP/1.1") -> bytes:
    return (
        f"{method} {path} {version}\r\nHost: x\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    ).encode()


# -- 1. the keep-alive pool -------------------------------------------------------------------


def test_early_answer_with_unsent_body_does_not_poison_the_pool(gw: GatewayProcess) -> None:
    for round_ in range(3):
        # Next answers 404 at once, while still waiting for most of the announced bytes (past
        # the gateway's 64 KiB body buffer, so the request has gone to Next).
        with RawConnection(gw.port) as attacker:
            attacker.send(head("POST", "/nonexistent", "Content-Length: 200000") + b"a" * 70000)
            reply = attacker.read_response("POST")
            assert reply.status == 404
            assert reply.headers["Connection"] == "close"  # the body will not be read
        # The victim's request must not become the rest of that body (it waited ~36 s, or was
        # answered with the attacker's response).
        started = time.monotonic()
        with RawConnection(gw.port) as victim:
            victim.send(head("GET", "/api/echo", f"Cookie: victim={round_}"))
            reply = victim.read_response()
        assert time.monotonic() - started < 2.0
        seen = echo(reply.body)
        assert reply.status == 200 and seen["method"] == "GET"
        assert seen["headers"]["cookie"] == f"victim={round_}"  # type: ignore[index]


def test_trickling_clients_hold_no_connection_to_next(gw: GatewayProcess) -> None:
    before = gw.ready_state()
    assert before is not None
    conns = [RawConnection(gw.port) for _ in range(20)]
    try:
        for conn in conns:
            conn.send(head("POST", "/api/upload", "Content-Length: 1000") + b"x")
        time.sleep(0.5)
        during = gw.ready_state()
        assert during is not None
        assert during["pool"]["in_use"] == 0
        assert during["pool"]["opened"] == before["pool"]["opened"]
        for conn in conns:  # a small body that ends goes to Next whole, in one piece
            conn.sock.sendall(b"y" * 999)
        for conn in conns:
            reply = conn.read_response("POST")
            assert reply.status == 200 and echo(reply.body)["length"] == 1000
    finally:
        for conn in conns:
            conn.close()


def test_refused_large_upload_does_not_stall_the_next_user(gw: GatewayProcess) -> None:
    # A page answers a POST without reading its 3 MiB body; the connection must not be reused.
    body = b"x" * (3 * 1024 * 1024)
    with RawConnection(gw.port) as uploader:
        uploader.send(head("POST", "/nonexistent-page", f"Content-Length: {len(body)}"))
        uploader.sock.sendall(body[:65536])
        reply = uploader.read_response("POST")
        assert reply.status == 404
    started = time.monotonic()
    status, _, _ = gw.request("/about", timeout=10)
    assert status == 200 and time.monotonic() - started < 2.0


# -- 2. headers are not rewritten under the parser; transfer codings ------------------------


def test_connection_header_cannot_turn_a_body_into_a_second_request(gw: GatewayProcess) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(
            head(
                "POST",
                "/api/echo",
                f"Content-Length: {len(SMUGGLED)}",
                "Connection: Content-Length",
            )
            + SMUGGLED
        )
        reply = conn.read_response("POST")
        assert reply.status == 200
        seen = echo(reply.body)
        assert seen["method"] == "POST" and seen["length"] == len(SMUGGLED)  # body, not request
        assert conn.nothing_more(1.0)


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["Transfer-Encoding: xchunked"], 501),
        (["Transfer-Encoding: gzip, chunked"], 501),
        (["Transfer-Encoding: identity"], 501),
        (["Transfer-Encoding: chunked, identity"], 400),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], 400),
        (["Transfer-Encoding: chunked, chunked"], 400),
        (["Transfer-Encoding: ,chunked"], 400),
        (["Content-Length: 5", "Transfer-Encoding: chunked"], 400),  # CL.TE
        (["Transfer-Encoding: chunked", "Content-Length: 5"], 400),  # TE.CL
        (["Content-Length: 0", "Transfer-Encoding: chunked"], 400),
        (["Transfer-Encoding : chunked"], 400),  # space before the colon
        (["X: y", " Transfer-Encoding: chunked"], 400),  # obs-fold
        (["Transfer-Encoding: chunked\x00"], 400),  # NUL
        (["Content-Length: 5", "Content-Length: 6"], 400),
        (["Content-Length: 5, 6"], 400),
        (["Content-Length: +5"], 400),
        (["Content-Length: -5"], 400),
        (["Content-Length: 0x5"], 400),
        (["Content-Length: 5 5"], 400),
        (["Content-Length: 99999999999999999999999"], 400),
        (["Content-Length: \u00b2"], 400),  # a digit to str.isdigit, not to HTTP
    ],
)
def test_ambiguous_framing_is_refused(gw: GatewayProcess, lines: list[str], status: int) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    with RawConnection(gw.port) as conn:
        conn.send(head("POST", "/api/echo", *lines) + body)
        reply = conn.read_response("POST")
        assert reply.status == status, reply.body
        assert conn.closed_by_peer(2.0)  # nothing after a refusal is read as a request


def test_transfer_encoding_in_http_1_0_is_refused(gw: GatewayProcess) -> None:
    reply = exchange(
        gw.port,
        head("POST", "/api/echo", "Transfer-Encoding: chunked", version="HTTP/1.0")
        + b"5\r\nhello\r\n0\r\n\r\n",
        "POST",
    )
    assert reply.status == 400


@pytest.mark.parametrize("coding", ["chunked", "CHUNKED", "Chunked"])
def test_chunked_in_any_case_is_forwarded_as_chunked(gw: GatewayProcess, coding: str) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(
            head("POST", "/api/echo", f"Transfer-Encoding: {coding}")
            + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            + SMUGGLED
        )
        first = conn.read_response("POST")
        second = conn.read_response("DELETE")  # a pipelined request after the body is fine
    assert first.status == 200 and echo(first.body)["length"] == 11
    assert second.status == 200 and echo(second.body)["method"] == "DELETE"


@pytest.mark.parametrize(
    "lines", [["Content-Length: 5", "Content-Length: 5"], ["Content-Length: 5, 5"]]
)
def test_identical_content_lengths_are_forwarded_as_one(
    gw: GatewayProcess, lines: list[str]
) -> None:
    reply = exchange(gw.port, head("POST", "/api/echo", *lines) + b"hello", "POST")
    assert reply.status == 200 and echo(reply.body)["length"] == 5


def test_chunk_size_overflow_is_not_read_as_a_small_chunk(gw: GatewayProcess) -> None:
    # 2**64 in hex: a parser that wraps it to 0 would read the rest as a new request.
    with RawConnection(gw.port) as conn:
        conn.send(
            head("POST", "/api/echo", "Transfer-Encoding: chunked")
            + b"10000000000000000\r\nab\r\n0\r\n\r\n"
            + SMUGGLED
        )
        reply = conn.read_response("POST")
        assert reply.status == 400  # larger than any body the gateway accepts: refused at once
        assert conn.closed_by_peer(2.0)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET http://evil.example/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # absolute-form
        (b"GET http://x/_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),  # bare CR in a value
        (b"GET /about HTTP/1.1\nHost: x\n\n", 200),  # bare LF: RFC 9112 §2.2 allows it
        (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
)
def test_request_lines_and_targets(gw: GatewayProcess, raw: bytes, status: int) -> None:
    reply = exchange(gw.port, raw)
    assert reply.status == status, reply.body[:200]


def test_absolute_form_upgrade_is_refused(gw: GatewayProcess) -> None:
    reply = exchange(
        gw.port,
        b"GET http://evil.example/_next/webpack-hmr HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert reply.status == 400


# -- 3. Expect: 100-continue ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["100-continue", "100-Continue"])
def test_expect_continue_is_answered_before_the_body(gw: GatewayProcess, spelling: str) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(head("POST", "/api/echo", "Content-Length: 5", f"Expect: {spelling}"))
        interim = conn.read_interim(2.0)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        assert time.monotonic() - conn.sent_at < 1.0  # curl's fallback is 1 s
        conn.send(b"hello")
        reply = conn.read_response("POST")
    assert reply.status == 200 and echo(reply.body)["length"] == 5
    assert "expect" not in echo(reply.body)["headers"]  # type: ignore[operator]


def test_expect_continue_over_the_limit_gets_the_final_status_unread(gw: GatewayProcess) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(
            head("POST", "/api/echo", f"Content-Length: {5 * 1024 * 1024}", "Expect: 100-continue")
        )
        reply = conn.read_response("POST")
        assert reply.status == 413 and reply.headers["Connection"] == "close"


def test_unknown_expectation_is_417(gw: GatewayProcess) -> None:
    reply = exchange(
        gw.port, head("POST", "/api/echo", "Content-Length: 5", "Expect: teapot") + b"hello", "POST"
    )
    assert reply.status == 417


# -- 7. slow bodies, and the number of connections to Next ------------------------------------


def test_trickled_body_times_out_with_408_and_frees_the_upstream(gw: GatewayProcess) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(head("POST", "/api/upload", "Content-Length: 100"))
        conn.sock.sendall(b"x")
        reply = conn.read_response("POST")
        assert reply.status == 408 and reply.headers["Connection"] == "close"
        assert 1.0 < reply.seconds < 4.0
    state = gw.ready_state()
    assert state is not None and state["pool"]["in_use"] == 0


def test_slow_but_steady_body_is_not_cut(gw: GatewayProcess) -> None:
    with RawConnection(gw.port) as conn:
        conn.send(head("POST", "/api/upload", "Content-Length: 4"))
        for _ in range(4):  # 3 s in all, more than the 1.5 s timeout, never 1 s of silence
            time.sleep(0.75)
            conn.sock.sendall(b"y")
        reply = conn.read_response("POST")
    assert reply.status == 200 and echo(reply.body)["length"] == 4


# -- 8. smaller ones --------------------------------------------------------------------------


def test_oversized_header_block_is_431(gw: GatewayProcess) -> None:
    reply = exchange(gw.port, head("GET", "/about", "X-Big: " + "a" * 70000))
    assert reply.status == 431


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/_gateway/health", "GET", {}),
        ("/_gateway/nope", "GET", {}),
        ("/_gateway/api/publish", "POST", {}),
        ("/connection/websocket", "GET", {}),  # not an upgrade: refused by the handler
    ],
)
def test_no_server_version_on_the_gateways_own_answers(
    gw: GatewayProcess, path: str, method: str, headers: dict[str, str]
) -> None:
    _, got, _ = gw.request(
        path, method=method, headers=headers, body=b"{}" if method == "POST" else None
    )
    assert "Server" not in got, got["Server"]


def test_upgrade_to_a_path_next_does_not_serve_as_a_socket_is_502(gw: GatewayProcess) -> None:
    reply = exchange(
        gw.port,
        b"GET /about HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert reply.status == 502, reply.body


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [("/api/echo", 5 * 1024 * 1024, 413), ("/nonexistent", 3 * 1024 * 1024, 404)],
)
def test_a_client_that_sends_its_whole_body_first_reads_the_early_answer(
    gw: GatewayProcess, path: str, size: int, status: int
) -> None:
    # Python's http.client writes the whole body before it reads: closing with its bytes
    # unread would reset the connection and destroy the answer (the gateway closes lingering).
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", path, body=b"z" * size)
        resp = conn.getresponse()
        assert resp.status == status
        resp.read()
        assert status != 413 or resp.getheader("Connection") == "close"
        if status == 413 or resp.getheader("Connection") == "close":
            return  # answered before the body was read: the connection ends after it
        # Next's 404 came after the gateway had read the whole body (a loaded machine): then the
        # connection stays good for the next request, as any keep-alive connection.
        conn.request("GET", "/about")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_a_client_that_sends_its_whole_body_with_an_unsupported_method_reads_the_405(
    gw: GatewayProcess,
) -> None:
    # The 405 is decided from the head alone; the 8 MiB body behind it must not turn the
    # answer into a reset (the gateway closes lingering, as after a 413).
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("PROPFIND", "/about", body=b"z" * (8 * 1024 * 1024))
        resp = conn.getresponse()
        assert resp.status == 405 and resp.getheader("Connection") == "close"
        assert b"PROPFIND is not supported" in resp.read()
    finally:
        conn.close()
