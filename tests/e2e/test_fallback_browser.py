"""When WebSockets are blocked: the demo chat in real Chromium through the gateway in front of a
real `next start`, with no WebSocket in the page (the constructor removed) or the upgrade
refused, works over the SDK's first fallback, HTTP-streaming with commands POSTed to the
emulation endpoint; and a bare EventSource, no SDK, receives its token's channels from
/connection/uni_sse.

Screenshots go to test-artifacts/fallback-*.png."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from support.browser import ARTIFACTS, ENV, User, api, chat_gateway
from support.procs import GatewayProcess

STARTED = time.time()  # screenshots older than this run prove nothing

# Run before any script of the page: the SDK finds no WebSocket at all, as in a browser or an
# embedded webview that lacks it.
NO_WEBSOCKET = "delete window.WebSocket;"


@pytest.fixture(scope="module")
def gw(next_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with chat_gateway(next_build, tmp_path_factory.mktemp("fallback")) as gateway:
        gateway.wait_ready(60)
        yield gateway


class Wire:
    """What the browser contexts of one test did: (method, path, status) of each /connection/
    response, in order; the WebSockets the route refused; what the pages logged."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, str, int]] = []
        self.refused_sockets: list[str] = []
        self.console: list[str] = []

    def watch(self, context: Any) -> None:
        def record(response: Any) -> None:
            path = urlsplit(response.url).path
            if path.startswith("/connection/"):
                self.responses.append((response.request.method, path, response.status))

        context.on("response", record)
        context.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

    def explain(self) -> str:
        """What to look at when a fallback did not connect."""
        return "\n".join(
            [f"/connection/ responses: {self.responses}", f"refused: {self.refused_sockets}"]
            + ["console:"]
            + [f"  {line}" for line in self.console[-60:]]
        )

    def paths(self) -> set[str]:
        return {path for _, path, _ in self.responses}


def without_websocket(wire: Wire) -> Callable[[Any], None]:
    def prepare(context: Any) -> None:
        wire.watch(context)
        context.add_init_script(NO_WEBSOCKET)

    return prepare


def with_upgrade_refused(wire: Wire) -> Callable[[Any], None]:
    """The page has a WebSocket, but every connection to the gateway's endpoint closes before it
    opens, with 1006 and no reason: what a page sees when a proxy refuses the upgrade."""

    def refuse(socket: Any) -> None:
        wire.refused_sockets.append(socket.url)
        socket.close(code=1006, reason="")

    def prepare(context: Any) -> None:
        wire.watch(context)
        context.route_web_socket("**/connection/websocket", refuse)

    return prepare


def sign_in(
    browser: Any,
    gw: GatewayProcess,
    names: tuple[str, str],
    prepare: Callable[[Any], None],
    wire: Wire,
) -> tuple[User, User]:
    """Two users on the chat page (User waits for the badge to say connected)."""
    users: list[User] = []
    try:
        for name in names:
            users.append(User(browser, gw, name, prepare=prepare))
    except Exception as e:
        for user in users:
            user.context.close()
        raise AssertionError(f"{name} did not connect: {e}\n{wire.explain()}") from None
    return users[0], users[1]


def shot(user: User, variant: str, what: str) -> None:
    path = ARTIFACTS / f"fallback-{variant}-{what}-{user.name.lower()}.png"
    user.page.screenshot(path=str(path), full_page=True)


def assert_chat_works_over_http_stream(
    users: tuple[User, User], wire: Wire, variant: str, text: str
) -> None:
    first, second = users
    for user in users:
        badge = user.page.locator("#connection-badge")
        try:
            user.page.wait_for_selector(
                '#connection-badge[data-state="connected"][data-transport="http_stream"]'
            )
        except Exception as e:
            raise AssertionError(f"{user.name} not on http_stream: {e}\n{wire.explain()}") from None
        assert badge.inner_text().strip() == "connected via http_stream"
        assert user.sockets == []  # no WebSocket reached the gateway (or opened at all)
    for user in users:
        user.page.wait_for_selector(f"#members li:has-text('{first.name}')")
        user.page.wait_for_selector(f"#members li:has-text('{second.name}')")
    shot(first, variant, "presence")

    first.say(text)
    second.sees(text)
    first.sees(text)
    shot(second, variant, "message")

    # On the wire: the session's stream opened (200) and each command POSTed after connect
    # (subscribes and the like) was taken (204); SSE, the second fallback, was never tried.
    streams = [r for r in wire.responses if r[1] == "/connection/http_stream"]
    commands = [r for r in wire.responses if r[1] == "/connection/emulation"]
    assert streams and all(r == ("POST", "/connection/http_stream", 200) for r in streams)
    assert commands and all(r == ("POST", "/connection/emulation", 204) for r in commands), (
        wire.responses
    )
    assert "/connection/sse" not in wire.paths()


def test_chat_works_with_no_websocket_in_the_page(browser: Any, gw: GatewayProcess) -> None:
    wire = Wire()
    users = sign_in(browser, gw, ("Ada", "Bob"), without_websocket(wire), wire)
    try:
        for user in users:
            assert user.page.evaluate("typeof window.WebSocket") == "undefined"
        assert_chat_works_over_http_stream(users, wire, "no-websocket", "hello without sockets")
    finally:
        for user in users:
            user.context.close()


def test_chat_falls_back_when_the_upgrade_is_refused(browser: Any, gw: GatewayProcess) -> None:
    wire = Wire()
    users = sign_in(browser, gw, ("Cleo", "Dan"), with_upgrade_refused(wire), wire)
    try:
        # Each page tried the WebSocket first, and each got the refusal.
        assert len(wire.refused_sockets) >= 2, wire.explain()
        assert all(urlsplit(url).path == "/connection/websocket" for url in wire.refused_sockets)
        assert_chat_works_over_http_stream(users, wire, "refused", "hello past the proxy")
    finally:
        for user in users:
            user.context.close()


# -- unidirectional: a bare EventSource ------------------------------------------------------

# What a page with no SDK does (Centrifugo's uni_sse: one JSON object per event): each event
# parsed as it comes; what cannot be parsed is kept raw, for the assertion to show.
OPEN_EVENT_SOURCE = """(connect) => {
  const state = { opened: false, errors: 0, messages: [], unparsed: [] };
  window.__uni = state;
  const url = '/connection/uni_sse?cf_connect=' + encodeURIComponent(JSON.stringify(connect));
  const source = new EventSource(url);
  window.__uniSource = source;
  source.onopen = () => { state.opened = true; };
  source.onerror = () => { state.errors += 1; };
  source.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); }
    catch (e) { state.unparsed.push(event.data); return; }
    state.messages.push(message);
    // The server ends the stream after a disconnect; EventSource would open it again.
    if (message.disconnect) source.close();
  };
}"""


def uni_token(sub: str, channels: list[str]) -> str:
    """A connection token signed like the app's, whose channels the server subscribes it to."""
    claims = {"sub": sub, "exp": int(time.time()) + 300, "channels": channels}
    return jwt.encode(claims, ENV["WS_SECRET"], algorithm="HS256")


class Listener:
    """A page of the gateway's origin with no SDK, whose EventSource collects the messages of
    /connection/uni_sse into ``window.__uni``."""

    def __init__(self, browser: Any, gw: GatewayProcess) -> None:
        self.context = browser.new_context()
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.goto(gw.url("/about"))

    def open(self, sub: str, channels: list[str]) -> None:
        self.page.evaluate(OPEN_EVENT_SOURCE, {"token": uni_token(sub, channels)})
        self.wait_for("'connect' in m", "connect push")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.page.evaluate("() => window.__uni")
        return state

    def wait_for(self, test: str, what: str) -> None:
        """Until a message passes `test` (a JS expression over `m`)."""
        try:
            self.page.wait_for_function(f"() => window.__uni.messages.some((m) => {test})")
        except Exception as e:
            raise AssertionError(
                f"no {what}: {e}\nstate: {self.state()}\nconsole: {self.console}"
            ) from None

    def close(self) -> None:
        self.page.evaluate("() => window.__uniSource && window.__uniSource.close()")
        self.context.close()


@pytest.fixture
def listener(browser: Any, gw: GatewayProcess) -> Iterator[Listener]:
    page = Listener(browser, gw)
    yield page
    page.close()


def test_uni_sse_delivers_the_tokens_channels_to_a_bare_event_source(
    listener: Listener, gw: GatewayProcess
) -> None:
    channel = "feed:uni-sse"
    listener.open("eve", [channel])
    data = {"text": "to a bare EventSource", "n": 1}
    api(gw, "publish", channel=channel, data=data)
    listener.wait_for(f"m.channel === {json.dumps(channel)}", "publication")

    state = listener.state()
    assert state["opened"] and state["errors"] == 0 and state["unparsed"] == [], state
    messages = state["messages"]
    connect = messages[0]["connect"]
    assert connect.get("client") and channel in connect.get("subs", {}), messages[0]
    publications = [m for m in messages if "channel" in m]
    assert len(publications) == 1, messages
    assert publications[0]["pub"]["data"] == data
    assert isinstance(publications[0]["pub"].get("offset"), int), publications[0]
    # Pushes unwrapped, and nothing else: no replies, no {"push": ...} envelopes.
    assert all(set(m) <= {"connect", "channel", "pub"} for m in messages), messages
    listener.page.screenshot(path=str(ARTIFACTS / "fallback-uni-sse.png"), full_page=True)


def test_uni_sse_a_broadcast_comes_as_one_json_event_per_publication(
    listener: Listener, gw: GatewayProcess
) -> None:
    # One broadcast reaches both channels in the same turn of the gateway's loop: what it sends
    # together must still be events a bare EventSource parses one by one.
    channels = ["feed:uni-a", "feed:uni-b"]
    listener.open("fay", channels)
    api(gw, "broadcast", channels=channels, data={"text": "both"})
    listener.page.wait_for_function(
        "() => window.__uni.unparsed.length > 0"
        " || window.__uni.messages.filter((m) => m.channel).length >= 2"
    )
    state = listener.state()
    assert state["unparsed"] == [], (
        "events a bare EventSource cannot JSON.parse (several messages in one event): "
        + json.dumps(state["unparsed"])
    )
    assert sorted(m["channel"] for m in state["messages"] if "channel" in m) == channels


def test_uni_sse_tells_the_disconnect(listener: Listener, gw: GatewayProcess) -> None:
    listener.open("gus", ["feed:uni-d"])
    api(gw, "disconnect", user="gus")
    listener.wait_for("'disconnect' in m", "disconnect push")
    disconnect = next(m for m in listener.state()["messages"] if "disconnect" in m)["disconnect"]
    assert isinstance(disconnect.get("code"), int) and "reason" in disconnect, disconnect


def test_screenshots_were_saved(gw: GatewayProcess) -> None:
    # `gw`: skipped with the tests that take the screenshots when a prerequisite is missing.
    shots = ARTIFACTS.glob("fallback-*.png") if ARTIFACTS.exists() else []
    saved = sorted(p.name for p in shots if p.stat().st_mtime >= STARTED)
    assert len(saved) >= 5, saved
