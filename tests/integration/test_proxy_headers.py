"""Request and response headers through the proxy, and the request body limit."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import GatewayProcess

SPOOFED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "Forwarded": "for=6.6.6.6;proto=https",
    "X-Real-IP": "6.6.6.6",
}


def echo(gw: GatewayProcess, headers: dict[str, str]) -> dict[str, str]:
    status, _, body = gw.request("/api/echo", headers=headers)
    assert status == 200
    return json.loads(body)["headers"]


def test_forwarding_headers_are_the_gateways_own_view(next_gateway: GatewayProcess) -> None:
    seen = echo(next_gateway, SPOOFED)
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{next_gateway.port}"
    assert seen["x-forwarded-port"] == str(next_gateway.port)
    assert "forwarded" not in seen and "x-real-ip" not in seen


def test_middleware_bypass_header_never_reaches_next(next_gateway: GatewayProcess) -> None:
    # CVE-2025-29927: with this header a request could skip Next.js middleware.
    seen = echo(next_gateway, {"X-Middleware-Subrequest": "middleware:middleware:middleware"})
    assert "x-middleware-subrequest" not in seen


def test_hop_by_hop_headers_are_dropped_both_ways(next_gateway: GatewayProcess) -> None:
    seen = echo(
        next_gateway,
        {
            "Connection": "X-Hop, keep-alive",
            "X-Hop": "1",
            "Keep-Alive": "timeout=1",
            "TE": "trailers",
            "X-End-To-End": "2",
        },
    )
    assert "x-hop" not in seen and "keep-alive" not in seen and "te" not in seen
    assert seen["x-end-to-end"] == "2"
    _, headers, _ = next_gateway.request("/about")
    assert "Keep-Alive" not in headers  # Next's own keep-alive terms are for the gateway only


@pytest.fixture(scope="module")
def trusting_gateway(
    next_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": str(next_build)},
        "proxy": {"trusted_proxies": ["127.0.0.0/8"]},
        "server": {"max_body_size": 1024 * 1024},
    }
    with GatewayProcess(tmp_path_factory.mktemp("trusting"), config) as gw:
        gw.wait_ready(60)
        yield gw


def test_trusted_proxy_headers_are_kept_and_extended(trusting_gateway: GatewayProcess) -> None:
    seen = echo(trusting_gateway, SPOOFED)
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "evil.example"
    assert seen["x-forwarded-port"] == "443"
    assert seen["forwarded"] == "for=6.6.6.6;proto=https" and seen["x-real-ip"] == "6.6.6.6"
    # Without headers from the trusted proxy the gateway still fills in its own view.
    assert echo(trusting_gateway, {})["x-forwarded-proto"] == "http"


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request, keep sending body chunks while the server lets us, return the reply."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    try:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            reply += data
        return reply
    finally:
        sock.close()


def test_declared_body_over_the_limit_is_413_before_it_is_sent(
    trusting_gateway: GatewayProcess,
) -> None:
    head = (
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\n\r\n" % (2 * 1024 * 1024)
    )
    reply = raw_exchange(trusting_gateway.port, head, [])
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply  # the client was never asked to send the body


def test_chunked_body_over_the_limit_is_413(trusting_gateway: GatewayProcess) -> None:
    head = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 40  # 2.5 MiB against a 1 MiB limit
    reply = raw_exchange(trusting_gateway.port, head, chunks)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]


def test_body_under_the_limit_passes(trusting_gateway: GatewayProcess) -> None:
    status, _, body = trusting_gateway.request("/api/upload", method="POST", body=b"y" * 1000)
    assert status == 200 and json.loads(body)["length"] == 1000
