"""The auth handoff with the real Next.js app: sign in (a Server Action), get a token from
/api/ws-token, connect the centrifuge SDK with it, and receive what a route handler publishes
through the server API."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from conftest import require
from support.app import sign_in
from support.procs import ROOT, GatewayProcess
from support.sdk import NODE_DIR, SdkClient

SECRET = "handoff-secret-0123456789-0123456789-abcdef"


@pytest.fixture(scope="module")
def app_gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require(
        shutil.which("node") is not None and (NODE_DIR / "node_modules" / "centrifuge").is_dir(),
        "the centrifuge SDK in tests/node (make test installs it)",
    )
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    config["next"]["dir"] = str(next_build)
    with GatewayProcess(
        tmp_path_factory.mktemp("handoff"), config, env={"WS_SECRET": SECRET}
    ) as gw:
        gw.wait_ready(60)
        yield gw


def test_ws_token_needs_a_session(app_gw: GatewayProcess) -> None:
    status, _headers, body = app_gw.request("/api/ws-token")
    assert status == 401 and json.loads(body) == {"error": "not signed in"}


def test_token_is_a_60_second_hs256_jwt_for_the_user(app_gw: GatewayProcess) -> None:
    cookie = sign_in(app_gw, "Ada")
    status, headers, body = app_gw.request("/api/ws-token", headers={"Cookie": cookie})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    token = json.loads(body)["token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["info"] == {"name": "Ada"} and claims["sub"]
    assert 55 <= claims["exp"] - time.time() <= 61
    forged = cookie[:-4] + "AAAA"
    assert app_gw.request("/api/ws-token", headers={"Cookie": forged})[0] == 401


def test_sdk_connects_with_the_handed_off_token_and_receives_a_route_handler_publication(
    app_gw: GatewayProcess,
) -> None:
    cookie = sign_in(app_gw, "Grace")
    token = json.loads(app_gw.request("/api/ws-token", headers={"Cookie": cookie})[2])["token"]
    client = SdkClient("grace")
    try:
        client.send(
            op="connect", url=f"ws://127.0.0.1:{app_gw.port}/connection/websocket", token=token
        )
        client.wait(lambda e: e["event"] == "connected")
        client.send(op="subscribe", channel="feed:demo")
        client.wait(lambda e: e["event"] == "subscribed" and e["channel"] == "feed:demo")
        status, _, body = app_gw.request(
            "/api/feed",
            method="POST",
            body=json.dumps({"text": "hello"}).encode(),
            headers={"Cookie": cookie, "Content-Type": "application/json"},
        )
        assert status == 200, body
        position: dict[str, Any] = json.loads(body)
        assert position["offset"] >= 1 and position["epoch"]
        event = client.wait(
            lambda e: e["event"] == "publication" and e["data"].get("text") == "hello"
        )
        assert (
            event["data"] == {"text": "hello", "from": "Grace"}
            and event["offset"] == position["offset"]
        )
    finally:
        client.close()


def test_private_channel_token_only_for_its_owner(app_gw: GatewayProcess) -> None:
    cookie = sign_in(app_gw, "Linus")
    token = json.loads(app_gw.request("/api/ws-token", headers={"Cookie": cookie})[2])["token"]
    user_id = jwt.decode(token, SECRET, algorithms=["HS256"])["sub"]
    status, _, body = app_gw.request(
        f"/api/ws-sub-token?channel=user:{user_id}", headers={"Cookie": cookie}
    )
    assert status == 200
    claims = jwt.decode(json.loads(body)["token"], SECRET, algorithms=["HS256"])
    assert claims["channel"] == f"user:{user_id}" and claims["sub"] == user_id
    assert (
        app_gw.request("/api/ws-sub-token?channel=user:someone-else", headers={"Cookie": cookie})[0]
        == 403
    )


def test_live_page_renders_the_client_feed_for_a_signed_in_user(app_gw: GatewayProcess) -> None:
    assert b"Sign in" in app_gw.request("/live")[2]
    cookie = sign_in(app_gw, "Barbara")
    status, _, page = app_gw.request("/live", headers={"Cookie": cookie})
    assert status == 200
    assert (
        b'id="connection-badge" data-state="offline"' in page
    )  # server render; the browser connects
