"""WebSocket upgrades the gateway does not own go to the child: HMR in `next dev`, and any
socket of the app's own, with subprotocols, messages and close codes passed through."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from support.procs import GatewayProcess, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

WS_CHILD = Path(__file__).resolve().parents[1] / "support" / "ws_child.py"


@pytest.fixture(scope="module")
def ws_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": [sys.executable, str(WS_CHILD), "--port", "{port}"]},
        "proxy": {"first_byte_timeout": 1.5},
    }
    with GatewayProcess(tmp_path_factory.mktemp("ws"), config) as gw:
        gw.wait_ready()
        yield gw


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_messages_and_the_childs_subprotocol_pass_through(ws_gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{ws_gateway.port}/ws"
        async with websockets.connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"  # the child's choice, not the first offered
            assert json.loads(await ws.recv()) == {"hello": "127.0.0.1"}
            await ws.send("text message")
            assert await ws.recv() == "text message"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"

    run(scenario())


def test_close_codes_pass_both_ways(ws_gateway: GatewayProcess) -> None:
    async def child_closes() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{ws_gateway.port}/ws") as ws:
            await ws.recv()
            await ws.send("close:4001:bye")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")

    async def client_closes() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{ws_gateway.port}/ws") as ws:
            await ws.recv()
            await ws.close(4002, "client done")

    run(child_closes())
    run(client_closes())
    wait_until(
        lambda: (
            json.loads(ws_gateway.request("/last-close")[2])
            == {"code": 4002, "reason": "client done"}
        ),
        5,
        "the child to see the client's close code",
    )


def test_a_refused_upgrade_reaches_the_client_as_the_childs_answer(
    ws_gateway: GatewayProcess,
) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"ws://127.0.0.1:{ws_gateway.port}/refuse")
        assert info.value.response.status_code == 403

    run(scenario())


@pytest.mark.parametrize(("path", "status"), [("/hangup", 502), ("/silent", 504)])
def test_an_upgrade_the_child_drops_or_never_answers_is_502_or_504(
    ws_gateway: GatewayProcess, path: str, status: int
) -> None:
    # Not Tornado's internal 599: a client, a proxy in front or a log reader must understand it.
    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"ws://127.0.0.1:{ws_gateway.port}{path}", open_timeout=15)
        assert info.value.response.status_code == status
        return time.monotonic() - started

    took = run(scenario())
    assert isinstance(took, float) and took < 10  # proxy.first_byte_timeout, not Tornado's 20 s


def test_hmr_socket_of_next_dev_opens_through_the_gateway(next_build: Path, tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, {"next": {"dir": str(next_build)}}, args=["--dev"]) as gw:
        gw.wait_ready(90)

        async def scenario() -> dict[str, object]:
            async with websockets.connect(
                f"ws://127.0.0.1:{gw.port}/_next/hmr?id=gateway-test"
            ) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 30))

        first = run(scenario())
        assert isinstance(first, dict) and "type" in first, first

        # Opened by a LAN name: Next 16 refuses the socket unless allowedDevOrigins lists the
        # host; the client gets an HTTP error (never 599), the gateway log says what to do, once.
        async def from_lan() -> int:
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(
                    f"ws://127.0.0.1:{gw.port}/_next/hmr?id=gateway-test",
                    origin="http://devbox.lan:3000",  # type: ignore[arg-type]
                )
            return int(info.value.response.status_code)

        assert run(from_lan()) == run(from_lan()) == 502
        hints = [
            line
            for line in gw.lines
            if "gateway.proxy.websocket" in line and "allowedDevOrigins: ['devbox.lan']" in line
        ]
        assert len(hints) == 1, gw.log
