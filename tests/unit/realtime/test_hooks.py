"""Proxy hooks, sans-I/O: the session asks a (fake) app and applies its answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.realtime import Conn, flush, make_node, token

from gateway.config import NamespaceConfig
from gateway.realtime.codes import Disconnect, DisconnectReply, Error, ErrorReply
from gateway.realtime.hooks import UNAVAILABLE, interpret


class FakeHooks:
    """Answers like a route handler would; records what it was asked."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def call(self, path: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, event, payload))
        return interpret(self.answers[event], event, path)


def hooked_node(answers: dict[str, dict[str, Any]], **namespace: Any) -> tuple[Any, FakeHooks]:
    hooks = FakeHooks(answers)
    node = make_node(
        hooks,
        namespaces={
            "room": NamespaceConfig(
                subscribe_hook="/api/sub", publish_hook="/api/pub", **namespace
            ),
        },
        hook_paths={"connect": "/api/connect", "rpc": "/api/rpc", "send": "/api/send"},
    )
    return node, hooks


@pytest.mark.gen_test
async def test_connect_hook_can_identify_a_user_without_a_token() -> None:
    node, hooks = hooked_node(
        {
            "connect": {
                "result": {
                    "user": "cookie-user",
                    "info": {"n": 1},
                    "data": {"welcome": True},
                    "channels": ["news"],
                }
            }
        }
    )
    conn = Conn(node)
    conn.session.http_headers = {"cookie": "session=abc"}
    result = (await conn.connect(""))["connect"]
    assert conn.session.user == "cookie-user"
    assert result["data"] == {"welcome": True} and set(result["subs"]) == {"news"}
    path, event, payload = hooks.calls[0]
    assert (path, event) == ("/api/connect", "connect")
    assert payload["headers"] == {"cookie": "session=abc"} and payload["authenticated"] is False


@pytest.mark.gen_test
async def test_connect_hook_sees_the_token_user_and_can_refuse() -> None:
    node, hooks = hooked_node({"connect": {"error": {"code": 4403, "message": "banned"}}})
    conn = Conn(node)
    assert (await conn.connect(token("mallory")))["error"] == {"code": 4403, "message": "banned"}
    assert hooks.calls[0][2]["user"] == "mallory" and hooks.calls[0][2]["authenticated"] is True


@pytest.mark.gen_test
async def test_subscribe_hook_is_the_policy_and_can_attach_data() -> None:
    node, hooks = hooked_node(
        {
            "connect": {"result": {}},
            "subscribe": {"result": {"info": {"role": "mod"}, "data": {"topic": "Lobby"}}},
        },
        allow_subscribe=False,
    )  # the hook, not allow_subscribe, decides here
    conn = Conn(node)
    await conn.connect()
    result = (await conn.call("subscribe", {"channel": "room:1", "data": {"pw": "x"}}))["subscribe"]
    assert result["data"] == {"topic": "Lobby"}
    assert hooks.calls[-1][2]["channel"] == "room:1" and hooks.calls[-1][2]["data"] == {"pw": "x"}
    hooks.answers["subscribe"] = {"error": {"code": 403, "message": "members only"}}
    assert (await conn.call("subscribe", {"channel": "room:2"}))["error"]["code"] == 403
    assert "room:2" not in conn.session.subs


@pytest.mark.gen_test
async def test_publish_hook_can_replace_the_data() -> None:
    node, _hooks = hooked_node(
        {
            "connect": {"result": {}},
            "subscribe": {"result": {}},
            "publish": {"result": {"data": {"text": "[redacted]"}}},
        }
    )
    conn = Conn(node)
    await conn.connect()
    await conn.call("subscribe", {"channel": "room:p"})
    assert (await conn.call("publish", {"channel": "room:p", "data": {"text": "secret"}}))[
        "publish"
    ] == {}
    await flush()
    pubs = [m["push"]["pub"]["data"] for m in conn.transport.take() if "pub" in m.get("push", {})]
    assert pubs == [{"text": "[redacted]"}]


@pytest.mark.gen_test
async def test_rpc_hook_answers_and_disconnect_answer_closes() -> None:
    node, hooks = hooked_node({"connect": {"result": {}}, "rpc": {"result": {"data": {"dice": 4}}}})
    conn = Conn(node)
    await conn.connect()
    assert (await conn.call("rpc", {"method": "roll", "data": {}}))["rpc"] == {"data": {"dice": 4}}
    hooks.answers["rpc"] = {"disconnect": {"code": 4001, "reason": "go away"}}
    await conn.send({"rpc": {"method": "roll"}})
    assert conn.transport.closed == (4001, "go away")


@pytest.mark.parametrize(
    ("answer", "raised"),
    [
        ({"result": {"x": 1}}, None),
        (
            {"error": {"code": 1000, "message": "custom", "temporary": True}},
            ErrorReply(Error(1000, "custom", True)),
        ),
        ({"disconnect": {"code": 4500, "reason": "bye"}}, DisconnectReply(Disconnect(4500, "bye"))),
        ({"disconnect": {"code": 200, "reason": "bad code"}}, ErrorReply(UNAVAILABLE)),
        ({"error": {"message": "no code"}}, ErrorReply(UNAVAILABLE)),
        ({"result": []}, ErrorReply(UNAVAILABLE)),
    ],
)
def test_answers_map_to_the_protocol(answer: dict[str, Any], raised: Exception | None) -> None:
    if raised is None:
        assert interpret(answer, "rpc", "/p") == {"x": 1}
        return
    with pytest.raises(type(raised)) as info:
        interpret(answer, "rpc", "/p")
    if isinstance(raised, ErrorReply):
        assert info.value.error == raised.error  # type: ignore[attr-defined]
    else:
        assert info.value.disconnect == raised.disconnect  # type: ignore[attr-defined]


def test_hook_payloads_encode_raw_connection_info() -> None:
    from gateway.realtime.protocol import encode, raw

    payload = {"user": "u", "info": raw({"name": "Ada"}), "data": None}
    assert json.loads(encode(payload)) == {"user": "u", "info": {"name": "Ada"}, "data": None}


@pytest.mark.gen_test(timeout=20)
async def test_http_hooks_map_slow_broken_and_missing_apps_to_temporary_errors() -> None:
    """HttpHooks against a real local HTTP server: timeouts, HTTP errors, bad bodies."""
    import asyncio

    import tornado.web
    from support.procs import free_port

    from gateway.realtime.hooks import HttpHooks

    class Slow(tornado.web.RequestHandler):
        async def post(self) -> None:
            await asyncio.sleep(2)
            self.finish({"result": {}})

    class Broken(tornado.web.RequestHandler):
        def post(self) -> None:
            self.set_status(500)
            self.finish("oops")

    class NotJson(tornado.web.RequestHandler):
        def post(self) -> None:
            self.finish(b"<html>")

    class Ok(tornado.web.RequestHandler):
        def post(self) -> None:
            assert self.request.headers["X-Gateway-Key"] == "key"
            assert self.request.headers["X-Gateway-Hook"] == "rpc"
            self.finish({"result": {"data": json.loads(self.request.body)["data"]}})

    port = free_port()
    app = tornado.web.Application(
        [("/slow", Slow), ("/broken", Broken), ("/html", NotJson), ("/ok", Ok)]
    )
    server = app.listen(port, "127.0.0.1")
    try:
        hooks = HttpHooks(lambda: ("127.0.0.1", port), "key", timeout=0.5)
        assert await hooks.call("/ok", "rpc", {"data": [1]}) == {"data": [1]}
        for path in ("/slow", "/broken", "/html", "/missing"):
            with pytest.raises(ErrorReply) as info:
                await hooks.call(path, "rpc", {})
            assert info.value.error == UNAVAILABLE and info.value.error.temporary
        down = HttpHooks(lambda: None, "key", timeout=0.5)
        with pytest.raises(ErrorReply):
            await down.call("/ok", "rpc", {})
        hooks.close()
    finally:
        server.stop()


def typescript_fields(type_name: str) -> set[str]:
    """Property names of ``export type <type_name> = {...}`` in route-hooks.ts."""
    import re
    from pathlib import Path

    source = (
        Path(__file__).resolve().parents[3] / "nextjs-app" / "lib" / "realtime" / "route-hooks.ts"
    ).read_text()
    match = re.search(rf"export type {type_name} = \{{(.*?)\}};", source, re.S)
    assert match, f"{type_name} is not in route-hooks.ts"
    body = re.sub(r"/\*\*.*?\*/", "", match.group(1), flags=re.S)
    return set(re.findall(r"(\w+)\??\s*:", body)) - {"string", "unknown"}


def test_the_typescript_hook_types_match_what_the_gateway_sends() -> None:
    # One schema: the payloads are built in gateway/realtime/hooks.py only, and the types the
    # app's route handlers are written against must name exactly those fields.
    from gateway.realtime import commands, hooks

    caller = commands.Caller("c", "u")
    built = {
        "ConnectRequest": hooks.connect_payload(
            "c", "u", commands.ConnectRequest(), "websocket", {}
        ),
        "SubscribeRequest": hooks.subscribe_payload(caller, commands.SubscribeRequest("ch")),
        "PublishRequest": hooks.publish_payload(caller, commands.PublishRequest("ch", None)),
        "RpcRequest": hooks.rpc_payload(caller, commands.RpcRequest("m")),
        "SendRequest": hooks.send_payload(caller, commands.SendRequest()),
    }
    for type_name, payload in built.items():
        assert typescript_fields(type_name) == set(payload), type_name
