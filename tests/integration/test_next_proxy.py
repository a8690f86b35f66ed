"""The gateway in front of a real `next start` of the bundled app."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import GatewayProcess, group_members, http_request, wait_until

# Differ between two responses by nature, or are per-connection (hop-by-hop).
VOLATILE = {"date", "connection", "keep-alive", "transfer-encoding"}


@pytest.fixture(scope="module")
def gateway(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gw")
    with GatewayProcess(workdir, {"next": {"dir": str(next_build)}}) as gw:
        gw.wait_ready(60)
        yield gw


def direct_url(gw: GatewayProcess, path: str) -> str:
    state = gw.ready_state()
    assert state is not None
    return f"http://127.0.0.1:{state['next']['port']}{path}"


def comparable(headers: object) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in VOLATILE)  # type: ignore[attr-defined]


def static_asset(html: bytes) -> str:
    m = re.search(rb'(/_next/static/[^"]+\.(?:js|css))"', html)
    assert m, "the page links no static asset"
    return m.group(1).decode()


def test_page_and_static_asset_are_byte_identical_to_direct(gateway: GatewayProcess) -> None:
    status, headers, body = gateway.request("/about")
    d_status, d_headers, d_body = http_request(direct_url(gateway, "/about"))
    assert status == d_status == 200
    assert body == d_body
    assert comparable(headers) == comparable(d_headers)

    asset = static_asset(body)
    for accept in ("identity", "gzip, br"):
        via = gateway.request(asset, headers={"Accept-Encoding": accept})
        direct = http_request(direct_url(gateway, asset), headers={"Accept-Encoding": accept})
        assert via[0] == direct[0] == 200
        assert via[2] == direct[2] and len(via[2]) > 0
        assert comparable(via[1]) == comparable(direct[1])


def test_dynamic_page_is_rendered_per_request_through_the_gateway(gateway: GatewayProcess) -> None:
    status, _, first = gateway.request("/time")
    _, _, second = gateway.request("/time")
    assert status == 200
    stamp = re.compile(rb'id="rendered-at">([^<]+)<')
    assert stamp.search(first) and stamp.search(second)
    assert stamp.search(first).group(1) != stamp.search(second).group(1)  # type: ignore[union-attr]
    assert f'id="host">127.0.0.1:{gateway.port}<'.encode() in first


def test_request_body_and_repeated_response_headers_pass_through(gateway: GatewayProcess) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    status, headers, body = gateway.request(
        "/api/echo?x=1",
        method="POST",
        body=payload,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Custom": "kept",
            "X-Forwarded-For": "6.6.6.6",
            "X-Middleware-Subrequest": "middleware",
        },
    )
    assert status == 200
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert echo["length"] == len(payload)
    assert echo["sha256"] == hashlib.sha256(payload).hexdigest()
    seen = echo["headers"]
    assert seen["x-custom"] == "kept"
    assert seen["host"] == f"127.0.0.1:{gateway.port}"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the client's claim was overwritten
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert seen["x-forwarded-proto"] == "http"
    assert "x-middleware-subrequest" not in seen
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert headers["X-Echo"] == "yes"


@pytest.mark.parametrize("method", ["PUT", "HEAD", "GET"])
def test_methods_pass_through(gateway: GatewayProcess, method: str) -> None:
    status, headers, body = gateway.request(
        "/api/echo", method=method, body=b"x" if method == "PUT" else None
    )
    assert status == 200
    direct = http_request(
        direct_url(gateway, "/api/echo"), method=method, body=b"x" if method == "PUT" else None
    )
    assert headers.get("Content-Length") == direct[1].get("Content-Length")
    if method == "HEAD":
        assert body == b"" == direct[2]
    else:
        assert json.loads(body)["method"] == method


def test_not_found_comes_from_next(gateway: GatewayProcess) -> None:
    status, _, body = gateway.request("/no-such-page")
    assert status == 404 and b"could not be found" in body


def test_kill9_of_next_restarts_it_and_pages_come_back(gateway: GatewayProcess) -> None:
    old = gateway.child_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(
        lambda: (gateway.ready_state() or {}).get("next", {}).get("pid") != old, 10, "the exit"
    )
    state = gateway.wait_ready(60)
    assert state["next"]["pid"] != old
    assert group_members(old) == []
    assert gateway.request("/about")[0] == 200
