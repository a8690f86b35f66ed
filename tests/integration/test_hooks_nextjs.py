"""Proxy hooks against the real Next.js app's example route handlers
(nextjs-app/app/api/realtime/*): connect by session cookie, subscribe policy, publish rewrite,
rpc; and what a client gets when the app is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from support.app import sign_in
from support.procs import ROOT, GatewayProcess, wait_until

SECRET = "hooks-secret-0123456789-0123456789-abcdef"


@pytest.fixture(scope="module")
def gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    config["next"]["dir"] = str(next_build)
    config["next"]["restart"] = {"backoff_initial": 3.0, "backoff_max": 3.0}
    config["realtime"]["hooks"].update({"connect": "/api/realtime/connect", "timeout": 3.0})
    config["realtime"]["namespaces"]["room"] = {
        "subscribe_hook": "/api/realtime/subscribe",
        "publish_hook": "/api/realtime/publish",
    }
    with GatewayProcess(
        tmp_path_factory.mktemp("hooks"), config, env={"WS_SECRET": SECRET}
    ) as gateway:
        gateway.wait_ready(60)
        yield gateway


async def session(
    gw: GatewayProcess, cookie: str | None, *commands: dict[str, Any]
) -> list[dict[str, Any]]:
    """Connect (no token: the connect hook decides from the cookie), send commands, return the
    replies in order (and whatever else arrived)."""
    headers = {"Cookie": cookie} if cookie else {}
    async with websockets.connect(
        f"ws://127.0.0.1:{gw.port}/connection/websocket",
        additional_headers=headers,
        origin=f"http://127.0.0.1:{gw.port}",
    ) as ws:
        frames = [json.dumps({"id": 1, "connect": {}})] + [
            json.dumps({"id": i + 2, **c}) for i, c in enumerate(commands)
        ]
        await ws.send("\n".join(frames))
        out: list[dict[str, Any]] = []
        try:
            while sum(1 for m in out if "id" in m) < len(frames):
                out += [
                    json.loads(line) for line in (await asyncio.wait_for(ws.recv(), 10)).split("\n")
                ]
        except websockets.exceptions.ConnectionClosed as e:
            out.append({"closed": e.rcvd.code if e.rcvd else None})
        return out


def by_id(messages: list[dict[str, Any]], cid: int) -> dict[str, Any]:
    return next(m for m in messages if m.get("id") == cid)


def test_connect_hook_identifies_the_user_by_the_session_cookie(gw: GatewayProcess) -> None:
    cookie = sign_in(gw, "Hedy", "/chat")
    replies = asyncio.run(session(gw, cookie, {"rpc": {"method": "whoami"}}))
    assert "connect" in by_id(replies, 1)
    whoami = by_id(replies, 2)["rpc"]["data"]
    assert whoami["info"] == {"name": "Hedy"} and whoami["user"]
    anonymous = asyncio.run(session(gw, None))
    assert by_id(anonymous, 1)["error"] == {"code": 101, "message": "unauthorized"}


def test_subscribe_hook_allows_with_data_and_denies(gw: GatewayProcess) -> None:
    cookie = sign_in(gw, "Radia", "/chat")
    replies = asyncio.run(
        session(
            gw,
            cookie,
            {"subscribe": {"channel": "room:general"}},
            {"subscribe": {"channel": "room:staff-only"}},
        )
    )
    assert by_id(replies, 2)["subscribe"]["data"]["room"] == "general"
    assert by_id(replies, 3)["error"] == {"code": 403, "message": "staff only"}


def test_publish_hook_rewrites_and_refuses(gw: GatewayProcess) -> None:
    cookie = sign_in(gw, "Grace", "/chat")
    replies = asyncio.run(
        session(
            gw,
            cookie,
            {"subscribe": {"channel": "room:pub"}},
            {"publish": {"channel": "room:pub", "data": {"text": "   trimmed   "}}},
            {"publish": {"channel": "room:pub", "data": {"nope": 1}}},
        )
    )
    assert by_id(replies, 3)["publish"] == {}
    pub = next(m["push"]["pub"] for m in replies if "pub" in m.get("push", {}))
    assert pub["data"]["text"] == "trimmed" and "checkedAt" in pub["data"]
    assert by_id(replies, 4)["error"] == {"code": 400, "message": "text is required"}


def test_hooks_without_the_app_are_temporary_errors(gw: GatewayProcess) -> None:
    cookie = sign_in(gw, "Ada", "/chat")
    os.kill(gw.child_pid(), signal.SIGKILL)
    wait_until(
        lambda: (gw.ready_state() or {}).get("next", {}).get("state") != "running", 5, "the crash"
    )
    replies = asyncio.run(session(gw, cookie))
    assert by_id(replies, 1)["error"] == {
        "code": 100,
        "message": "internal server error",
        "temporary": True,
    }
    gw.wait_ready(30)
