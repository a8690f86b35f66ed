"""The demo chat in Chromium goes offline for 5 s while 20 messages are published: back online,
the SDK recovers them (lib/realtime keeps the subscription across the reconnect), and the page
shows each once, in order, with one resubscribe and no history read.

Screenshots go to test-artifacts/recovery-*.png."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import (
    ARTIFACTS,
    User,
    api,
    chat_gateway,
    chat_message,
    num_clients,
    protocol_messages,
)
from support.procs import GatewayProcess, wait_until

CHANNEL = "chat:lobby"
OFFLINE_FOR = 5.0
MISSED = 20


@pytest.fixture(scope="module")
def gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with chat_gateway(next_build, tmp_path_factory.mktemp("recovery")) as gateway:
        gateway.wait_ready(60)
        yield gateway


@pytest.fixture
def cy(browser: Any, gw: GatewayProcess) -> Iterator[User]:
    user = User(browser, gw, "Cy")
    yield user
    user.context.close()


def publish(gw: GatewayProcess, message_id: str, text: str) -> None:
    api(gw, "publish", channel=CHANNEL, data=chat_message(message_id, text))


def test_offline_for_5_s_recovers_20_messages_once_in_order(
    cy: User, gw: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    page = cy.page
    page.wait_for_selector('#messages[data-state="subscribed"]', state="attached")
    for n in (1, 2):
        publish(gw, f"before-{n}", f"before {n}")
    cy.sees("before 2")
    before = cy.message_texts()
    mark_sent, mark_received = len(cy.sent), len(cy.received)

    went_offline = time.monotonic()
    cy.context.set_offline(True)
    # The SDK closes its socket on the browser's `offline` event: the gateway sees it go.
    wait_until(lambda: num_clients(gw) == 0, 5, "the page's WebSocket to close")
    page.wait_for_selector('#connection-badge[data-state="reconnecting"]')
    missed = [f"offline {n:02d}" for n in range(1, MISSED + 1)]
    for n, text in enumerate(missed, 1):
        publish(gw, f"offline-{n}", text)
    time.sleep(max(0.0, went_offline + OFFLINE_FOR - time.monotonic()))
    assert cy.message_texts() == before  # nothing arrived while offline
    assert num_clients(gw) == 0

    back = time.monotonic()
    cy.context.set_offline(False)
    cy.sees(missed[-1])
    recovered_in = time.monotonic() - back
    cy.wait_connected()
    page.screenshot(path=str(ARTIFACTS / "recovery-back-online.png"), full_page=True)

    # On the page: every missed message once, in order, after what was there.
    assert cy.message_texts() == before + missed
    messages = page.locator("#messages")
    assert messages.get_attribute("data-was-recovering") == "true"
    assert messages.get_attribute("data-recovered") == "true"
    assert page.locator("#gap-notice").count() == 0

    # On the wire: one subscribe to the room, asking to recover; no history read.
    sent = protocol_messages(cy.sent[mark_sent:])
    subscribes = [c for c in sent if c.get("subscribe", {}).get("channel") == CHANNEL]
    assert len(subscribes) == 1, subscribes
    request = subscribes[0]["subscribe"]
    assert request.get("recover") is True and request.get("epoch") and request.get("offset"), (
        request
    )
    assert not [c for c in sent if "history" in c], sent
    # ...answered with the 20 missed publications in the subscribe reply: recovery, not replay.
    replies = [
        r
        for r in protocol_messages(cy.received[mark_received:])
        if r.get("id") == subscribes[0]["id"]
    ]
    assert len(replies) == 1, replies
    result = replies[0]["subscribe"]
    assert result.get("recovered") is True, result
    assert [p["data"]["text"] for p in result.get("publications", [])] == missed
    with capsys.disabled():
        methods = Counter(next(k for k in c if k != "id") for c in sent if c)
        print(
            f"\nrecovery: {MISSED} messages on the page {recovered_in * 1000:.0f} ms after going "
            f"back online; {len(cy.sent) - mark_sent} frames sent since going offline, "
            f"commands {dict(sorted(methods.items()))}"
        )
