"""The demo chat in Chromium (Playwright): a gateway in front of the built app, and a signed-in
user whose page records what its WebSockets send and receive."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from support.procs import ROOT, GatewayProcess

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
API_KEY = "browser-test-api-key"
ENV = {"WS_SECRET": "browser-test-secret-0123456789-abcdefghij", "GATEWAY_API_KEY": API_KEY}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chat_gateway(next_build: Path, workdir: Path) -> GatewayProcess:
    """The shipped configuration (config/gateway.yaml) in front of the built app."""
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    config["next"]["dir"] = str(next_build)
    return GatewayProcess(workdir, config, env=ENV)


def api(gw: GatewayProcess, method: str, **params: Any) -> dict[str, Any]:
    return gw.api(method, API_KEY, **params)["result"]


def num_clients(gw: GatewayProcess) -> int:
    return int(api(gw, "info")["nodes"][0]["num_clients"])


def chat_message(message_id: str, text: str) -> dict[str, Any]:
    """A message as the chat's Server Action publishes it."""
    return {"id": message_id, "text": text, "from": {"id": "srv", "name": "Server"}, "at": 0}


class User:
    """A browser context signed in as `name`, on the chat page. ``sent`` and ``received``
    hold every WebSocket frame of its pages, in order: (monotonic time, text); ``console`` what
    its pages logged ("type: text"), to tell why a page did not connect.

    ``prepare`` is called with the new context before its first page opens: init scripts and
    routes that must be in place before the app's scripts run (e.g. no WebSocket)."""

    def __init__(
        self,
        browser: Any,
        gw: GatewayProcess,
        name: str,
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = name
        self.context = browser.new_context()
        self.context.set_default_timeout(15_000)
        self.sockets: list[str] = []
        self.sent: list[tuple[float, str]] = []
        self.received: list[tuple[float, str]] = []
        self.console: list[str] = []
        if prepare is not None:
            prepare(self.context)
        self.page = self.open(gw, "/signin?next=/chat")
        self.page.fill("input[name=name]", name)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/chat")
        self.wait_connected()

    def open(self, gw: GatewayProcess, path: str) -> Any:
        page = self.context.new_page()
        page.on("websocket", self._record)
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.goto(gw.url(path))
        return page

    def _record(self, ws: Any) -> None:
        self.sockets.append(ws.url)
        ws.on("framesent", lambda payload: self.sent.append((time.monotonic(), str(payload))))
        ws.on(
            "framereceived", lambda payload: self.received.append((time.monotonic(), str(payload)))
        )

    def wait_connected(self) -> None:
        self.page.wait_for_selector('#connection-badge[data-state="connected"]')

    def shot(self, name: str) -> None:
        self.page.screenshot(
            path=str(ARTIFACTS / f"chat-{name}-{self.name.lower()}.png"), full_page=True
        )

    def say(self, text: str) -> None:
        self.page.fill("#message-input", text)
        self.page.click("form button[type=submit]")

    def sees(self, text: str, timeout: float = 10_000) -> float:
        started = time.monotonic()
        self.page.wait_for_selector(f"#messages li:has-text('{text}')", timeout=timeout)
        return time.monotonic() - started

    def message_texts(self) -> list[str]:
        texts: list[str] = self.page.eval_on_selector_all(
            "#messages li .text", "items => items.map((item) => item.textContent)"
        )
        return texts


def protocol_messages(frames: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """The commands (or replies and pushes) in WebSocket frames: JSON objects, one per line (a
    frame may batch several)."""
    return [json.loads(line) for _, frame in frames for line in frame.splitlines() if line]
