"""Upstream failures, timeouts and the keep-alive pool, against a stand-in child whose
misbehaviour is chosen per request."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.procs import GatewayProcess, open_response, standin_command, wait_until


def standin_gateway(
    tmp_path: Path, *flags: str, proxy: dict[str, Any] | None = None
) -> GatewayProcess:
    config = {
        "next": {"dir": ".", "command": standin_command(*flags)},
        "proxy": {"first_byte_timeout": 1.0, "idle_timeout": 1.0, **(proxy or {})},
    }
    return GatewayProcess(tmp_path, config)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with standin_gateway(tmp_path_factory.mktemp("failures")) as gateway:
        gateway.wait_ready()
        yield gateway


def pool(gw: GatewayProcess) -> dict[str, int]:
    state = gw.ready_state()
    assert state is not None
    return state["pool"]


def test_reset_mid_body_cuts_the_client_connection(gw: GatewayProcess) -> None:
    conn, resp = open_response(gw.url("/truncate"))
    try:
        assert resp.status == 200 and resp.headers["Content-Length"] == "100000"
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_chunked_body_cut_short_is_not_presented_as_complete(gw: GatewayProcess) -> None:
    conn, resp = open_response(gw.url("/chunked-truncate"))
    try:
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_closed_before_responding_is_502_without_a_traceback(gw: GatewayProcess) -> None:
    status, _, body = gw.request("/no-response", headers={"Accept": "application/json"})
    assert status == 502
    assert json.loads(body) == {
        "error": "bad_gateway",
        "detail": "The application server did not answer.",
    }
    assert "Traceback" not in body.decode() and "Traceback" not in gw.log


def test_no_first_byte_in_time_is_504(gw: GatewayProcess) -> None:
    started = time.monotonic()
    status, _, body = gw.request("/slow?s=3", headers={"Accept": "application/json"})
    assert status == 504 and json.loads(body)["error"] == "gateway_timeout"
    assert 0.9 < time.monotonic() - started < 2.5


def test_idle_timeout_cuts_a_silent_stream(gw: GatewayProcess) -> None:
    conn, resp = open_response(gw.url("/stall?s=3&chunks=2"))
    try:
        assert resp.status == 200
        started = time.monotonic()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
        assert time.monotonic() - started < 2.5
    finally:
        conn.close()


def test_a_long_stream_that_keeps_talking_is_never_cut(gw: GatewayProcess) -> None:
    # 8 chunks 0.5 s apart: 3.5 s in all, far beyond the 1 s idle and first-byte timeouts.
    conn, resp = open_response(gw.url("/stall?s=0.5&chunks=8"), timeout=20)
    try:
        body = resp.read()
    finally:
        conn.close()
    assert body == b"".join(b"part %d\n" % i for i in range(8))


def test_connection_closed_by_next_while_idle_is_not_reused(gw: GatewayProcess) -> None:
    assert gw.request("/close-after?ms=50")[0] == 200
    time.sleep(0.3)  # the child has closed the connection the gateway keeps in its pool
    before = pool(gw)
    status, _, body = gw.request("/")
    assert status == 200 and body.startswith(b"standin")
    after = pool(gw)
    assert after["discarded_stale"] > before["discarded_stale"]


def test_request_on_a_connection_next_just_closed_is_retried_once(tmp_path: Path) -> None:
    with standin_gateway(tmp_path, "--close-reused") as gateway:
        gateway.wait_ready()
        assert gateway.request("/")[0] == 200
        opened = pool(gateway)["opened"]
        # The pooled connection is met with a close: GET is sent again on a new connection.
        status, _, body = gateway.request("/")
        assert status == 200 and body.startswith(b"standin")
        assert pool(gateway)["opened"] == opened + 1
        # A POST with a body cannot be replayed: the client gets 502, never a double submit.
        status, _, body = gateway.request("/", method="POST", body=b"order=1")
        assert status == 502


def test_connect_failure_while_the_child_restarts_is_503(tmp_path: Path) -> None:
    with standin_gateway(tmp_path) as gateway:
        gateway.wait_ready()
        conn, resp = open_response(gateway.url("/crash"), headers={"Accept": "application/json"})
        try:
            status = resp.status
        finally:
            conn.close()
        assert status in (502, 503), (
            gateway.log
        )  # the child died mid-request: never a hang or a 500
        wait_until(lambda: gateway.ready_state() is not None, 5, "the gateway")
        status, headers, _ = gateway.request("/", headers={"Accept": "application/json"})
        assert status in (200, 503)
        if status == 503:
            assert "Retry-After" in headers
