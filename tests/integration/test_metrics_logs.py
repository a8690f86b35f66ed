"""/_gateway/metrics (Prometheus text, read with prometheus-client's parser) after real traffic,
its network allowlist, and the access log in text and JSON, with no secret in either."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from support.procs import GatewayProcess, standin_command, wait_until
from support.realtime import SECRET, token

API_KEY = "metrics-test-api-key-0123456789"
CONFIG: dict[str, Any] = {
    "next": {"dir": ".", "command": standin_command()},
    "realtime": {"namespaces": {"room": {"history_size": 10, "history_ttl": 60}}},
}


def samples(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = gw.request("/_gateway/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"WS_SECRET": SECRET, "GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(
        tmp_path_factory.mktemp("metrics"), CONFIG, env=env, args=["--log-format", "json"]
    ) as gateway:
        gateway.wait_ready()
        yield gateway


def publish(gw: GatewayProcess, channel: str, data: Any) -> None:
    reply = gw.api("publish", API_KEY, channel=channel, data=data)
    assert "result" in reply, reply


def test_metrics_count_what_happened(gw: GatewayProcess) -> None:
    before = samples(gw)
    for _ in range(3):
        assert gw.request("/page")[0] == 200
    assert gw.request("/_gateway/nothing-here")[0] == 404

    async def realtime() -> dict[tuple[str, Any], float]:
        ws_url = f"ws://127.0.0.1:{gw.port}/connection/websocket"
        async with websockets.connect(ws_url, origin=gw.url("").rstrip("/")) as ws:
            await ws.send(
                json.dumps({"id": 1, "connect": {"token": token("m")}})
                + "\n"
                + json.dumps({"id": 2, "subscribe": {"channel": "room:1"}})
            )
            replies = 0
            while replies < 2:
                replies += len(str(await ws.recv()).splitlines())
            await asyncio.to_thread(publish, gw, "room:1", {"n": 1})
            assert "pub" in str(await ws.recv())
            return await asyncio.to_thread(samples, gw)

    during = asyncio.run(asyncio.wait_for(realtime(), 20))
    assert value(during, "gateway_websocket_connections") == 1
    assert value(during, "gateway_realtime_connections", transport="websocket") == 1
    assert value(during, "gateway_realtime_connections", transport="http_stream") == 0
    assert value(during, "gateway_subscriptions") == 1
    assert value(during, "gateway_channels") == 1
    assert value(during, "gateway_child_up") == 1
    assert value(during, "gateway_child_state", state="running") == 1
    assert value(during, "gateway_child_restarts_total") == 0
    assert value(during, "gateway_broker_up") == 1
    assert value(during, "gateway_broker_errors_total") == 0

    def grew(name: str, **labels: str) -> float:
        return value(during, name, **labels) - before.get(
            (name, tuple(sorted(labels.items()))), 0.0
        )

    assert grew("gateway_http_requests_total", kind="proxied", code="2xx") == 3
    assert grew("gateway_http_requests_total", kind="gateway", code="4xx") == 1
    assert grew("gateway_http_requests_total", kind="api", code="2xx") == 1
    assert grew("gateway_upstream_response_seconds_count") == 3
    assert grew("gateway_websocket_connects_total") == 1
    assert grew("gateway_messages_in_total") == 2
    assert grew("gateway_publications_total") == 1
    assert grew("gateway_publish_seconds_count") == 1
    assert grew("gateway_messages_out_total") >= 1
    assert value(during, "gateway_upstream_connections_opened_total") >= 1

    after = wait_until(
        lambda: (m := samples(gw)) and value(m, "gateway_websocket_connections") == 0 and m,
        5,
        "the closed socket to leave the gauge",
    )
    assert value(after, "gateway_subscriptions") == 0


def test_access_log_is_json_with_every_field_and_no_secret(gw: GatewayProcess) -> None:
    secret_token = token("logged")
    gw.request(f"/search?q=shoes&token={secret_token}&page=2")

    def access_entries() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in gw.lines]  # every line is JSON, child's too
        return [e for e in entries if e["logger"] == "gateway.access" and "/search" in e["path"]]

    access = wait_until(access_entries, 5, "the access line")
    assert len(access) == 1, access
    entries = [json.loads(line) for line in gw.lines]
    entry = access[0]
    assert entry["method"] == "GET"
    assert entry["path"] == "/search?q=shoes&token=[redacted]&page=2"
    assert entry["status"] == 200
    assert entry["bytes"] == len(b"standin ") + len(str(gw.child_pid()))
    assert entry["client"] == "127.0.0.1"
    assert 0 < entry["duration_ms"] < 10_000
    assert entry["level"] == "info" and entry["time"].endswith("Z")
    child = [e for e in entries if e.get("source") == "child"]
    assert any(e["message"].startswith("standin pid") for e in child), child
    for secret in (secret_token, SECRET, API_KEY):
        assert secret not in gw.log


def test_a_jwt_is_redacted_whatever_its_parameter_is_called(gw: GatewayProcess) -> None:
    page_jwt, socket_jwt = token("page-reader"), token("socket-user")
    gw.request(f"/jwt-page?auth={page_jwt}&n=1")

    async def connect() -> None:
        ws_url = f"ws://127.0.0.1:{gw.port}/connection/websocket?t={socket_jwt}"
        async with websockets.connect(ws_url, origin=gw.url("").rstrip("/")) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": socket_jwt}}))
            await ws.recv()

    asyncio.run(asyncio.wait_for(connect(), 10))

    def lines() -> tuple[list[str], list[str]] | None:
        entries = [json.loads(line) for line in gw.lines]
        access = [
            e["path"]
            for e in entries
            if e["logger"] == "gateway.access"
            and e["path"].startswith(("/jwt-page", "/connection/websocket?"))
        ]
        child = [e["message"] for e in entries if e.get("source") == "child"]
        child = [m for m in child if "/jwt-page" in m]
        return (access, child) if len(access) == 2 and child else None

    access, child = wait_until(lines, 5, "the access and child lines")
    assert sorted(access) == ["/connection/websocket?t=[redacted]", "/jwt-page?auth=[redacted]&n=1"]
    assert child == ['request "GET /jwt-page?auth=[redacted]&n=1 HTTP/1.1" 200 -']
    assert page_jwt not in gw.log and socket_jwt not in gw.log


def test_metrics_are_refused_outside_the_allowlist(tmp_path: Path) -> None:
    config = {**CONFIG, "metrics": {"allowed_networks": ["192.0.2.0/24"]}}
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready()
        status, _, body = gw.request("/_gateway/metrics")
        assert status == 403
        assert json.loads(body)["error"] == "forbidden"
        assert b"gateway_" not in body


def test_metrics_can_be_turned_off_and_text_logs_carry_the_same_fields(tmp_path: Path) -> None:
    config = {**CONFIG, "metrics": {"enabled": False}}
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready()
        assert gw.request("/_gateway/metrics")[0] == 404
        assert gw.request("/page?password=hunter2")[0] == 200
        gw.wait_log("gateway.access: 200 GET /page")
        line = next(x for x in gw.lines if "gateway.access: 200 GET /page" in x)
        # status, method, path, bytes, client IP, duration
        size = len(f"standin {gw.child_pid()}")
        tail = f"200 GET /page?password=[redacted] {size}B 127.0.0.1 "
        assert re.search(re.escape(tail) + r"\d+\.\d\dms$", line), line
        assert "hunter2" not in gw.log  # nor in the child's lines, which are prefixed:
        assert any(' [next] request "GET /page?password=[redacted]' in x for x in gw.lines)


def test_behind_a_trusted_proxy_the_forwarded_client_is_checked_and_logged(
    tmp_path: Path,
) -> None:
    # nginx on the same box: every request comes from 127.0.0.1, the internet's ones with
    # X-Forwarded-For. Those must not pass the loopback-only allowlist, nor log as 127.0.0.1.
    config = {**CONFIG, "proxy": {"trusted_proxies": ["127.0.0.1"]}}
    env = {"GATEWAY_API_KEY": API_KEY}
    with GatewayProcess(tmp_path, config, env=env) as gw:
        gw.wait_ready()
        from_internet = {"X-Forwarded-For": "203.0.113.9"}
        assert gw.request("/_gateway/metrics", headers=from_internet)[0] == 403
        assert gw.request("/_gateway/metrics")[0] == 200  # a local scrape
        api = {"Authorization": f"apikey {API_KEY}", "Content-Type": "application/json"}
        status, _, _ = gw.request(
            "/_gateway/api/info", method="POST", headers={**api, **from_internet}, body=b"{}"
        )
        assert status == 403
        assert gw.request("/_gateway/api/info", method="POST", headers=api, body=b"{}")[0] == 200
        gw.request("/from-afar", headers=from_internet)
        gw.wait_log("gateway.access: 200 GET /from-afar")
        line = next(x for x in gw.lines if "gateway.access: 200 GET /from-afar" in x)
        assert " 203.0.113.9 " in line, line
        refused = [x for x in gw.lines if "gateway.access: 403 GET /_gateway/metrics" in x]
        assert len(refused) == 1 and " 203.0.113.9 " in refused[0], refused
