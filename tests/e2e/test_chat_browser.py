"""The demo chat in real Chromium (Debian's, driven by Playwright), through the gateway in
front of a real `next start`: two users, presence, live messages, typing, navigation on one
WebSocket, recovery on reload, and a Next.js crash the sockets survive.

Screenshots go to test-artifacts/ (kept by CI). GATEWAY_TEST_CHROMIUM names another Chromium
binary than /usr/bin/chromium."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import ARTIFACTS, User, api, chat_gateway, chat_message, num_clients
from support.procs import GatewayProcess, wait_until

STARTED = time.time()  # screenshots older than this run prove nothing


@pytest.fixture(scope="module")
def gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with chat_gateway(next_build, tmp_path_factory.mktemp("browser")) as gateway:
        gateway.wait_ready(60)
        yield gateway


@pytest.fixture(scope="module")
def users(browser: Any, gw: GatewayProcess) -> Iterator[tuple[User, User]]:
    ada = User(browser, gw, "Ada")
    bob = User(browser, gw, "Bob")
    yield ada, bob
    ada.context.close()
    bob.context.close()


def test_both_users_see_each_other_in_presence(users: tuple[User, User]) -> None:
    ada, bob = users
    for user in users:
        user.page.wait_for_selector("#members li:has-text('Ada')")
        user.page.wait_for_selector("#members li:has-text('Bob')")
    ada.shot("presence")
    assert "Bob" in bob.page.inner_text("#members") and "(you)" in bob.page.inner_text("#members")


def test_a_message_reaches_the_other_page_within_a_second(users: tuple[User, User]) -> None:
    ada, bob = users
    ada.say("hello from Ada")
    started = time.monotonic()
    bob.page.wait_for_selector("#messages li:has-text('hello from Ada')", timeout=5_000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    ada.sees("hello from Ada")
    bob.shot("message")


def test_typing_indicator_uses_client_publish(users: tuple[User, User]) -> None:
    ada, bob = users
    ada.page.fill("#message-input", "")
    ada.page.type("#message-input", "typing...", delay=50)
    bob.page.wait_for_selector("#typing:has-text('Ada is typing')")
    ada.page.fill("#message-input", "")


def test_rpc_hook_answers_through_the_gateway(users: tuple[User, User]) -> None:
    ada, _ = users
    ada.page.click("text=Roll a die (RPC)")
    text = ada.page.wait_for_selector("#dice").inner_text()
    assert text.startswith("You rolled ") and 1 <= int(text.split()[-1].rstrip(".")) <= 6


def test_navigation_keeps_the_same_websocket(users: tuple[User, User], gw: GatewayProcess) -> None:
    ada, _ = users
    clients_before = num_clients(gw)
    sockets_before = len(ada.sockets)
    ada.page.click("header nav >> text=About")
    ada.page.wait_for_selector("h1:has-text('About')")
    ada.page.click("header nav >> text=Chat")
    ada.page.wait_for_selector("#messages")
    ada.wait_connected()
    ada.page.wait_for_selector("#messages li:has-text('hello from Ada')")  # history again
    assert len(ada.sockets) == sockets_before  # no new WebSocket was opened
    assert num_clients(gw) == clients_before  # and the gateway saw no new connection


def test_reload_recovers_messages_sent_while_away(
    users: tuple[User, User], gw: GatewayProcess
) -> None:
    ada, bob = users
    bob.page.close()
    wait_until(lambda: num_clients(gw) == 1, 10, "Bob's socket to close")
    ada.say("while Bob was away 1")
    ada.say("while Bob was away 2")
    ada.sees("while Bob was away 2")
    bob.page = bob.open(gw, "/chat")
    bob.wait_connected()
    bob.sees("while Bob was away 1")
    bob.sees("while Bob was away 2")
    bob.shot("recovered")


def test_chat_survives_a_nextjs_crash(users: tuple[User, User], gw: GatewayProcess) -> None:
    ada, bob = users
    child = gw.child_pid()
    os.kill(child, signal.SIGKILL)
    # Next.js is down: the sockets are the gateway's, so realtime goes on.
    api(
        gw,
        "publish",
        channel="chat:lobby",
        data=chat_message("server-1", "published while Next.js restarts"),
    )
    ada.sees("published while Next.js restarts", timeout=3_000)
    bob.sees("published while Next.js restarts", timeout=3_000)
    # ...and that happened with no Next.js to serve pages (it takes longer than this to boot).
    assert gw.request("/about", headers={"Accept": "application/json"})[0] == 503
    for user in users:
        assert user.page.get_attribute("#connection-badge", "data-state") == "connected"
    ada.shot("next-down")
    # Pages come back once the child is up again.
    wait_until(
        lambda: (
            (gw.ready_state() or {}).get("next", {}).get("state") == "running"
            and gw.child_pid() != child
        ),
        30,
        "Next.js to restart",
    )
    bob.page.reload()
    bob.wait_connected()
    bob.sees("published while Next.js restarts")
    ada.say("after the restart")
    bob.sees("after the restart")
    bob.shot("after-restart")


def test_screenshots_were_saved(users: tuple[User, User]) -> None:
    # `users`: skipped with the tests that take the screenshots when a prerequisite is missing.
    shots = ARTIFACTS.glob("chat-*.png") if ARTIFACTS.exists() else []
    saved = sorted(p.name for p in shots if p.stat().st_mtime >= STARTED)
    assert len(saved) >= 4, saved
    assert shutil.disk_usage(ARTIFACTS).free > 0
