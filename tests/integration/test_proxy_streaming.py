"""Streaming through the gateway against a real `next start`: chunks as they come, in both
directions, with backpressure, and clean-up when the client goes away."""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import socket
import statistics
import time

from support.procs import GatewayProcess, fd_count, open_response, rss_bytes, wait_until

MiB = 1024 * 1024


def read_until(resp: object, marker: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Read a streamed body until ``marker`` appears; return what was read and when."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, f"{marker!r} did not arrive; got {data[-300:]!r}"
        chunk = resp.read1(65536)  # type: ignore[attr-defined]
        assert chunk, f"the body ended before {marker!r}"
        data += chunk
    return data, time.monotonic()


def test_suspense_shell_arrives_before_the_slow_part(next_gateway: GatewayProcess) -> None:
    started = time.monotonic()
    conn, resp = open_response(next_gateway.url("/stream?ms=1500"))
    try:
        assert resp.status == 200
        _, shell_at = read_until(resp, b'id="shell"')
        _, slow_at = read_until(resp, b'id="slow"')
    finally:
        conn.close()
    assert shell_at - started < 0.75  # not held back until the page was complete
    assert slow_at - started >= 1.5


def test_rsc_payload_streams(next_gateway: GatewayProcess) -> None:
    # Without the cache-busting _rsc parameter Next 16 answers 307, which must pass untouched.
    status, headers, _ = next_gateway.request("/stream?ms=0", headers={"RSC": "1"})
    assert status == 307 and headers["Location"] == "/stream?ms=0&_rsc"
    started = time.monotonic()
    conn, resp = open_response(next_gateway.url("/stream?ms=1500&_rsc"), headers={"RSC": "1"})
    try:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/x-component")
        _, first_at = read_until(resp, b"This paragraph is in the first chunk.")
        _, slow_at = read_until(resp, b"Loaded after")
    finally:
        conn.close()
    assert first_at - started < 0.75 and slow_at - started >= 1.5


def test_readable_stream_chunks_arrive_one_by_one(next_gateway: GatewayProcess) -> None:
    conn, resp = open_response(next_gateway.url("/api/stream?chunks=4&interval=400"))
    try:
        arrivals = []
        for i in range(4):
            _, at = read_until(resp, f"chunk {i}\n".encode())
            arrivals.append(at)
    finally:
        conn.close()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap > 0.25 for gap in gaps), gaps  # each chunk came when Next sent it


def test_sse_events_are_delivered_as_they_are_emitted(next_gateway: GatewayProcess) -> None:
    conn, resp = open_response(
        next_gateway.url("/api/sse?count=10&interval=100"), headers={"Accept-Encoding": "gzip"}
    )
    delays = []
    try:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in resp.headers
        data = b""
        for i in range(10):
            data, _ = read_until(resp, f'"i":{i},'.encode())
            received = time.time() * 1000
            event = json.loads(data.split(b"data: ")[-1].split(b"\n")[0])
            delays.append(received - event["t"])
    finally:
        conn.close()
    assert statistics.median(delays) < 30, delays  # ms from Next emitting to us receiving


def test_slow_client_slows_next_instead_of_filling_gateway_memory(
    next_gateway: GatewayProcess,
) -> None:
    assert next_gateway.proc is not None
    pid = next_gateway.proc.pid
    before = rss_bytes(pid)
    sock = socket.create_connection(("127.0.0.1", next_gateway.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        sock.sendall(b"GET /api/bytes?mb=512 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(2.0)  # read nothing: Next could produce 512 MiB in this time
        grown = rss_bytes(pid) - before
        assert grown < 48 * MiB, (
            f"gateway grew {grown / MiB:.0f} MiB for a client that reads nothing"
        )
        received = 0
        sock.settimeout(10)
        while received < 20 * MiB:
            chunk = sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
    finally:
        sock.close()


def test_upload_streams_to_next_without_being_held_in_memory(next_gateway: GatewayProcess) -> None:
    assert next_gateway.proc is not None
    pid = next_gateway.proc.pid
    before = rss_bytes(pid)
    size = 96 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    peak = 0
    sock = socket.create_connection(("127.0.0.1", next_gateway.port))
    try:
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        for _ in range(size // MiB):
            sock.sendall(block)
            digest.update(block)
            peak = max(peak, rss_bytes(pid) - before)
        sock.settimeout(30)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        echo = json.loads(resp.read())
    finally:
        sock.close()
    assert resp.status == 200
    assert echo == {"length": size, "sha256": digest.hexdigest()}
    assert peak < 48 * MiB, f"gateway grew {peak / MiB:.0f} MiB during a {size // MiB} MiB upload"


def test_clients_that_leave_mid_stream_abort_next_and_leak_nothing(
    next_gateway: GatewayProcess,
) -> None:
    assert next_gateway.proc is not None
    pid = next_gateway.proc.pid

    def stats() -> dict[str, int]:
        return json.loads(next_gateway.request("/api/sse?stats=1")[2])

    def pool() -> dict[str, int]:
        return next_gateway.ready_state()["pool"]  # type: ignore[index]

    next_gateway.request("/about")
    fds_before = fd_count(pid) - pool()["idle"]
    cancelled_before = stats()["cancelled"]
    for _ in range(200):
        conn, resp = open_response(next_gateway.url("/api/sse?count=100000&interval=20"))
        read_until(resp, b"data: ")
        conn.close()
    wait_until(lambda: stats()["open"] == 0, 10, "Next to see every stream cancelled")
    assert stats()["cancelled"] - cancelled_before == 200
    wait_until(lambda: pool()["in_use"] == 0, 5, "the pool to have nothing in use")
    assert fd_count(pid) - pool()["idle"] <= fds_before + 2
