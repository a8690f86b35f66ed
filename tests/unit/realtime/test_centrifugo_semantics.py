"""Centrifugo's semantics, pinned from its protocol docs (centrifugal.dev: client protocol,
error codes, channel permission model) and centrifuge-js (subscription flags)."""

from __future__ import annotations

from typing import Any

import pytest
from support.realtime import Conn, flush, make_node, token

from gateway.config import NamespaceConfig
from gateway.realtime import codes
from gateway.realtime.protocol import raw

REJECT_UNRECOVERED = 2  # centrifuge-js subscriptionFlags.rejectUnrecovered (with getState)


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def call(self, path: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, event, payload))
        return {}


async def behind(conn: Conn, node: Any, channel: str) -> str:
    """Subscribe, unsubscribe, and let the channel move past the history window."""
    epoch = (await conn.call("subscribe", {"channel": channel}))["subscribe"]["epoch"]
    await conn.call("unsubscribe", {"channel": channel})
    for i in range(15):  # the window is 10
        await node.publish(channel, raw(i))
    return str(epoch)


@pytest.mark.gen_test
async def test_reject_unrecovered_flag_gives_112_instead_of_recovered_false() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    epoch = await behind(conn, node, "chat:g")
    params = {"channel": "chat:g", "recover": True, "offset": 1, "epoch": epoch}
    refused = await conn.call("subscribe", {**params, "flag": REJECT_UNRECOVERED | 1})
    assert refused["error"]["code"] == 112
    # Nothing was left registered: the client reloads its state and subscribes again.
    assert "chat:g" not in conn.session.subs
    again = (await conn.call("subscribe", {"channel": "chat:g"}))["subscribe"]
    assert again["offset"] == 15
    # Without the flag (channel compaction only), the answer is recovered: false.
    await conn.call("unsubscribe", {"channel": "chat:g"})
    plain = (await conn.call("subscribe", {**params, "flag": 1}))["subscribe"]
    assert plain["recovered"] is False


@pytest.mark.gen_test
async def test_reject_unrecovered_flag_does_not_stop_a_recovery_that_works() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    epoch = (await conn.call("subscribe", {"channel": "chat:h"}))["subscribe"]["epoch"]
    await conn.call("unsubscribe", {"channel": "chat:h"})
    await node.publish("chat:h", raw("missed"))
    result = (
        await conn.call(
            "subscribe",
            {"channel": "chat:h", "recover": True, "epoch": epoch, "flag": REJECT_UNRECOVERED},
        )
    )["subscribe"]
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == ["missed"]


@pytest.mark.gen_test
async def test_rpc_without_a_handler_is_108_not_available() -> None:
    conn = Conn(make_node())
    await conn.connect()
    reply = await conn.call("rpc", {"method": "anything"})
    assert reply["error"]["code"] == codes.NOT_AVAILABLE.code == 108


def features(**options: Any) -> dict[str, NamespaceConfig]:
    return {
        "room": NamespaceConfig(presence=True, history_size=10, history_ttl=60, **options),
        "bare": NamespaceConfig(),  # neither presence nor history configured
    }


@pytest.mark.parametrize("method", ["presence", "presence_stats", "history"])
@pytest.mark.gen_test
async def test_for_client_options_allow_without_subscribing(method: str) -> None:
    feature = "history" if method == "history" else "presence"
    node = make_node(namespaces=features(**{f"allow_{feature}_for_client": True}))
    conn = Conn(node)
    await conn.connect()
    assert "error" not in await conn.call(method, {"channel": "room:1"})
    # Not configured on the namespace: 108, whatever the permissions.
    assert (await conn.call(method, {"channel": "bare:1"}))["error"]["code"] == 108


@pytest.mark.parametrize("suffix", ["", "_for_subscriber"])
@pytest.mark.parametrize("method", ["presence", "history"])
@pytest.mark.gen_test
async def test_subscriber_option_needs_a_subscription(method: str, suffix: str) -> None:
    node = make_node(namespaces=features(**{f"allow_{method}{suffix}": True}))
    conn = Conn(node)
    await conn.connect()
    assert (await conn.call(method, {"channel": "room:1"}))["error"]["code"] == 103
    await conn.call("subscribe", {"channel": "room:1"})
    assert "error" not in await conn.call(method, {"channel": "room:1"})


@pytest.mark.parametrize(("anonymous_too", "code"), [(False, 103), (True, None)])
@pytest.mark.gen_test
async def test_anonymous_clients_need_the_for_anonymous_option(
    anonymous_too: bool, code: int | None
) -> None:
    node = make_node(
        allow_anonymous=True,
        namespaces=features(
            allow_presence_for_client=True, allow_presence_for_anonymous=anonymous_too
        ),
    )
    conn = Conn(node)
    await conn.connect("")  # no token: anonymous
    reply = await conn.call("presence", {"channel": "room:1"})
    assert reply.get("error", {}).get("code") == code


@pytest.mark.gen_test
async def test_send_goes_to_the_send_hook() -> None:
    hooks = RecordingHooks()
    node = make_node(hooks, hook_paths={"send": "/api/send"})
    conn = Conn(node)
    await conn.connect(token(sub="sam"))
    await conn.session.handle_frame('{"send":{"data":{"typing":true}}}')
    await flush()
    assert conn.transport.closed is None
    assert hooks.calls == [
        (
            "/api/send",
            "send",
            {"client": conn.session.id, "user": "sam", "info": None, "data": {"typing": True}},
        )
    ]


@pytest.mark.gen_test
async def test_send_without_a_hook_closes_with_3508() -> None:
    conn = Conn(make_node())
    await conn.connect()
    await conn.session.handle_frame('{"send":{"data":{}}}')
    assert conn.transport.closed == (3508, "not available")


@pytest.mark.gen_test
async def test_lost_state_makes_server_side_subscribers_reconnect_with_3010() -> None:
    # A client-side subscriber is told to resubscribe (2500); a server-side one cannot (the
    # SDK drops the subscription), so it is disconnected with 3010 and recovers on reconnect.
    node = make_node()
    server_side = Conn(node)
    await server_side.connect(token(channels=["chat:s"]))
    client_side = Conn(node)
    await client_side.connect()
    await client_side.call("subscribe", {"channel": "chat:s"})
    await flush()
    server_side.transport.take()
    client_side.transport.take()
    node.resync("chat:s")
    await flush()
    assert server_side.transport.closed == (3010, "insufficient state")
    pushes = [m["push"] for m in client_side.transport.take() if "push" in m]
    assert pushes == [
        {"channel": "chat:s", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}
    ]
    assert client_side.transport.closed is None


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("subscribe", {"channel": "chat:1", "recover": True, "offset": True}),
        ("subscribe", {"channel": "chat:1", "recover": True, "offset": -1}),
        ("subscribe", {"channel": "chat:1", "recover": "yes"}),
        ("subscribe", {"channel": "chat:1", "flag": True}),
        ("history", {"channel": "chat:1", "limit": True}),
        ("history", {"channel": "chat:1", "since": {"offset": False, "epoch": "e"}}),
        ("history", {"channel": "chat:1", "reverse": 1}),
        ("publish", {"channel": "chat:1"}),
        ("presence", {"channel": ""}),
        ("rpc", {"method": 5}),
    ],
)
@pytest.mark.gen_test
async def test_one_set_of_parameter_rules_107(method: str, params: dict[str, Any]) -> None:
    conn = Conn(make_node())
    await conn.connect()
    assert (await conn.call(method, params))["error"]["code"] == 107
