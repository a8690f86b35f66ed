"""Helpers for the attack tests (tests/attack/): talk to a real gateway over WebSockets and the
server API, then check that it still serves everybody else promptly and logged no traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from support.procs import GatewayProcess
from support.realtime import SECRET, token

PROMPT = 1.0
"""Seconds an ordinary request may take right after an attack (they take milliseconds)."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: str | bytes, secret: str | bytes = SECRET, header: str = "") -> str:
    """A token whose payload segment is exactly ``payload`` (JSON text of our choosing, which
    PyJWT would not write), HMAC-SHA256 signed with ``secret``, header HS256 unless given."""
    head = b64((header or '{"alg":"HS256","typ":"JWT"}').encode())
    body = b64(payload.encode() if isinstance(payload, str) else payload)
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def ws_url(gw: GatewayProcess) -> str:
    return f"ws://127.0.0.1:{gw.port}/connection/websocket"


def origin(gw: GatewayProcess) -> Any:
    return f"http://127.0.0.1:{gw.port}"


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(gw: GatewayProcess, **kwargs: Any) -> Any:
    """``websockets.connect`` to the realtime endpoint (use with ``async with``)."""
    return websockets.connect(ws_url(gw), origin=origin(gw), **kwargs)


async def connected(ws: Any, user: str = "attacker") -> dict[str, Any]:
    """Send a connect command with a valid token; the connect result."""
    await ws.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
    answer = json.loads(await ws.recv())
    assert "connect" in answer, answer
    result: dict[str, Any] = answer["connect"]
    return result


async def read_until_closed(
    ws: Any, timeout: float = 10
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """Every message the server sends until it closes, and its close code and reason
    (1006 if it dropped the connection without a close frame). Fails if it stays open."""
    messages: list[dict[str, Any]] = []

    async def read() -> tuple[int, str]:
        try:
            while True:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    frame = frame.decode()
                messages.extend(json.loads(line) for line in frame.split("\n"))
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "")

    try:
        closed = await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"still open after {timeout} s; received {messages[:5]}... ({len(messages)})"
        ) from None
    return messages, closed


async def closed_with(ws: Any, timeout: float = 10) -> tuple[int, str]:
    return (await read_until_closed(ws, timeout))[1]


def error_codes(messages: list[dict[str, Any]]) -> list[int]:
    return [m["error"]["code"] for m in messages if "error" in m]


def api_call(
    gw: GatewayProcess, key: str, body: bytes, method: str = "publish"
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as it is to the server API: (HTTP status, JSON reply)."""
    status, _, reply = gw.request(
        f"/_gateway/api/{method}", method="POST", body=body, headers={"X-API-Key": key}
    )
    return status, json.loads(reply)


def log_mark(gw: GatewayProcess) -> int:
    """Where the gateway log is now; :func:`still_serving` looks at what comes after."""
    return len(gw.lines)


async def still_serving(gw: GatewayProcess, mark: int) -> None:
    """An HTTP request through the gateway to the child, and a fresh WebSocket that connects,
    both answered within PROMPT; and no traceback logged since ``mark``."""
    started = time.monotonic()
    status, _, body = await asyncio.to_thread(gw.request, "/", timeout=10)
    elapsed = time.monotonic() - started
    assert status == 200 and body.startswith(b"standin"), (status, body[:100])
    assert elapsed < PROMPT, f"HTTP request took {elapsed:.2f} s"

    started = time.monotonic()
    async with ws_connect(gw) as ws:
        await connected(ws, "bystander")
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT, f"WebSocket connect took {elapsed:.2f} s"

    logged = "\n".join(gw.lines[mark:])
    assert "Traceback" not in logged, logged
