"""The /_next/static fast path: same bytes and headers as Next.js, precompressed, safe."""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import time
from pathlib import Path

import brotli
import pytest
from support.procs import GatewayProcess, http_request, standin_command, wait_until

from integration.conftest import STATIC_HEADERS, direct_url

HEADERS = STATIC_HEADERS


def assets(gw: GatewayProcess) -> list[str]:
    html = gw.request("/")[2]
    found = sorted(set(re.findall(r'(/_next/static/[^"]+\.(?:js|css))"', html.decode())))
    assert found, "the home page links no static asset"
    return found


def pick(headers: object) -> dict[str, str]:
    return {k: headers[k] for k in HEADERS if headers.get(k) is not None}  # type: ignore[index,attr-defined]


def test_assets_match_next_byte_for_byte_and_header_for_header(
    next_gateway: GatewayProcess,
) -> None:
    for path in assets(next_gateway):
        status, headers, body = next_gateway.request(path, headers={"Accept-Encoding": "identity"})
        d_status, d_headers, d_body = http_request(
            direct_url(next_gateway, path), headers={"Accept-Encoding": "identity"}
        )
        assert status == d_status == 200
        assert body == d_body
        assert pick(headers) == pick(d_headers)
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_precompressed_representations_decode_to_the_same_bytes(
    next_gateway: GatewayProcess,
) -> None:
    path = max(assets(next_gateway), key=lambda p: len(next_gateway.request(p)[2]))
    identity = next_gateway.request(path, headers={"Accept-Encoding": "identity"})[2]
    _, gz_headers, gz_body = next_gateway.request(path, headers={"Accept-Encoding": "gzip"})
    assert gz_headers["Content-Encoding"] == "gzip" and gz_headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(gz_body) == identity and len(gz_body) < len(identity)
    # brotli is added in the background after start-up
    wait_until(
        lambda: (
            next_gateway.request(path, headers={"Accept-Encoding": "gzip, br"})[1].get(
                "Content-Encoding"
            )
            == "br"
        ),
        15,
        "the brotli representation",
    )
    _, _, br_body = next_gateway.request(path, headers={"Accept-Encoding": "gzip, br"})
    assert brotli.decompress(br_body) == identity and len(br_body) < len(gz_body)
    # q=0 refuses a coding
    _, headers, _ = next_gateway.request(path, headers={"Accept-Encoding": "br;q=0, gzip"})
    assert headers["Content-Encoding"] == "gzip"


def test_conditional_and_head_requests(next_gateway: GatewayProcess) -> None:
    path = assets(next_gateway)[0]
    _, headers, body = next_gateway.request(path)
    status, h304, b304 = next_gateway.request(path, headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and b304 == b"" and h304["ETag"] == headers["ETag"]
    status, _, _ = next_gateway.request(
        path, headers={"If-Modified-Since": headers["Last-Modified"]}
    )
    assert status == 304
    status, _, _ = next_gateway.request(path, headers={"If-None-Match": '"other"'})
    assert status == 200
    status, h_head, b_head = next_gateway.request(path, method="HEAD")
    assert status == 200 and b_head == b"" and h_head["Content-Length"] == str(len(body))


def test_range_and_misses_are_left_to_next(next_gateway: GatewayProcess) -> None:
    path = assets(next_gateway)[0]
    status, headers, body = next_gateway.request(path, headers={"Range": "bytes=0-9"})
    assert status == 206 and len(body) == 10 and headers["Content-Range"].startswith("bytes 0-9/")
    status, _, _ = next_gateway.request("/_next/static/chunks/does-not-exist.js")
    assert status == 404


def largest_asset(gw: GatewayProcess) -> tuple[str, bytes]:
    sizes = {p: gw.request(p, headers={"Accept-Encoding": "identity"})[2] for p in assets(gw)}
    path = max(sizes, key=lambda p: len(sizes[p]))
    return path, sizes[path]


def all_headers(headers: object) -> list[tuple[str, str]]:
    items = headers.items()  # type: ignore[attr-defined]
    return sorted((k.lower(), v) for k, v in items if k.lower() != "date")


@pytest.mark.parametrize("accept", ["identity", "gzip", "gzip, deflate, br"])
def test_a_plain_get_and_a_head_carry_the_same_headers(
    next_gateway: GatewayProcess, accept: str
) -> None:
    # A plain GET leaves with a head built once per file (handler._send_whole); HEAD takes the
    # general path. RFC 9110 §9.3.2: the same fields either way, so the two cannot drift apart.
    path, _ = largest_asset(next_gateway)
    status, get_headers, body = next_gateway.request(path, headers={"Accept-Encoding": accept})
    h_status, head_headers, _ = next_gateway.request(
        path, method="HEAD", headers={"Accept-Encoding": accept}
    )
    assert status == h_status == 200 and len(body) == int(get_headers["Content-Length"])
    assert all_headers(get_headers) == all_headers(head_headers)
    assert get_headers["Date"]


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "version, extra", [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")]
)
def test_a_connection_that_closes_after_a_static_file_gets_all_of_it(
    next_gateway: GatewayProcess, version: str, extra: str
) -> None:
    path, identity = largest_asset(next_gateway)
    with socket.create_connection(("127.0.0.1", next_gateway.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the send cannot be whole
        sock.sendall(f"GET {path} {version}\r\nHost: x\r\n{extra}\r\n".encode())
        time.sleep(0.2)  # the gateway's socket buffer fills; the rest waits in its stream
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == identity
    if version == "HTTP/1.1":
        assert b"\r\nConnection: close\r\n" in head + b"\r\n"


def test_pipelined_static_requests_are_answered_whole_and_in_order(
    next_gateway: GatewayProcess,
) -> None:
    paths = assets(next_gateway)[:3]
    bodies = [next_gateway.request(p, headers={"Accept-Encoding": "identity"})[2] for p in paths]
    requests = "".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths)
    requests += f"GET {paths[0]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", next_gateway.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(requests.encode())
        time.sleep(0.2)
        data = read_until_closed(sock)
    for expected in [*bodies, bodies[0]]:
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
        assert head.startswith(b"HTTP/1.1 200") and data[:length] == expected
        data = data[length:]
    assert data == b""


@pytest.mark.parametrize(
    "path",
    [
        "/_next/static/../../package.json",
        "/_next/static/%2e%2e/%2e%2e/package.json",
        "/_next/static/chunks/..%2f..%2f..%2fpackage.json",
        "/_next/static/%2E%2E%2F%2E%2E%2FBUILD_ID",
        "/_next/static/..\\..\\package.json",
        "/_next/static//etc/passwd",
        "/_next/static/chunks/%00.js",
    ],
)
def test_traversal_never_leaves_the_static_directory(
    next_gateway: GatewayProcess, path: str
) -> None:
    status, _, body = next_gateway.request(path)
    assert status == 404
    assert b"gateway-nextjs-app" not in body and b"root:" not in body


@pytest.fixture
def fake_app(tmp_path: Path) -> Path:
    """A next dir with a build of our own making; the child is the stand-in."""
    app = tmp_path / "app"
    (app / ".next" / "static" / "chunks").mkdir(parents=True)
    (app / ".next" / "BUILD_ID").write_text("build-1")
    (app / ".next" / "static" / "chunks" / "main.js").write_text("console.log('build 1');\n" * 50)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret outside the build")
    os.symlink(secret, app / ".next" / "static" / "chunks" / "leak.js")
    os.symlink(tmp_path, app / ".next" / "static" / "outside")
    return app


def test_assets_come_from_memory_symlinks_out_are_refused_and_a_new_build_is_reloaded(
    fake_app: Path, tmp_path: Path
) -> None:
    config = {"next": {"dir": str(fake_app), "command": standin_command()}}
    (tmp_path / "gw").mkdir()
    with GatewayProcess(tmp_path / "gw", config) as gw:
        gw.wait_ready()
        wait_until(
            lambda: b"build 1" in gw.request("/_next/static/chunks/main.js")[2], 10, "the asset"
        )
        # The stand-in knows nothing of it: these bytes came from the gateway's memory.
        for refused in ("/_next/static/chunks/leak.js", "/_next/static/outside/secret.txt"):
            status, _, body = gw.request(refused)
            assert status == 404 and b"secret" not in body
        # Unknown files still go to the child.
        assert gw.request("/_next/static/chunks/new.js")[2].startswith(b"standin")

        (fake_app / ".next" / "static" / "chunks" / "main.js").write_text(
            "console.log('build 2');\n"
        )
        (fake_app / ".next" / "BUILD_ID").write_text("build-2")
        assert b"build 1" in gw.request("/_next/static/chunks/main.js")[2]  # until a restart
        os.kill(gw.child_pid(), signal.SIGKILL)
        wait_until(
            lambda: b"build 2" in gw.request("/_next/static/chunks/main.js")[2], 15, "the new build"
        )
