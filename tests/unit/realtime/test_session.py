"""The session state machine, driven with frames and a fake transport (no sockets)."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from support.realtime import SECRET, Conn, flush, make_node, token

from gateway.config import NamespaceConfig
from gateway.realtime.protocol import raw


@pytest.mark.gen_test
async def test_connect_reply_negotiates_heartbeat_and_expiry() -> None:
    node = make_node()
    conn = Conn(node)
    result = (await conn.connect(token(ttl=60)))["connect"]
    assert result["client"] == conn.session.id
    assert result["ping"] == 25 and result["pong"] is True
    assert result["expires"] is True and 55 <= result["ttl"] <= 60
    assert node.clients[conn.session.id] is conn.session


@pytest.mark.gen_test
async def test_subscribe_then_publications_arrive_in_order() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    result = (await conn.call("subscribe", {"channel": "chat:1"}))["subscribe"]
    assert result["recoverable"] is True and result["epoch"]
    for i in range(3):
        await node.publish("chat:1", raw({"n": i}))
    await flush()
    pubs = [m["push"]["pub"] for m in conn.transport.take() if "pub" in m.get("push", {})]
    assert [(p["data"]["n"], p["offset"]) for p in pubs] == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.gen_test
async def test_messages_of_one_loop_turn_leave_as_one_frame_encoded_once() -> None:
    node = make_node()
    conns = [Conn(node) for _ in range(3)]
    for conn in conns:
        await conn.connect()
        await conn.call("subscribe", {"channel": "news"})
    for i in range(5):
        await node.publish("news", raw(i))
    await flush()
    for conn in conns:
        assert len(conn.transport.frames) == 1  # five publications, one WebSocket frame
        assert len(conn.transport.frames[0].split(b"\n")) == 5
    # The same bytes object went to every subscriber: encoded once.
    firsts = [conn.transport.frames[0].split(b"\n")[0] for conn in conns]
    assert firsts[0] == firsts[1] == firsts[2]


@pytest.mark.gen_test
async def test_recovery_returns_every_missed_publication_or_none() -> None:
    node = make_node()  # chat: history of 10
    conn = Conn(node)
    await conn.connect()
    sub = (await conn.call("subscribe", {"channel": "chat:r"}))["subscribe"]
    epoch = sub["epoch"]
    await node.publish("chat:r", raw("seen"))
    await flush()
    conn.transport.take()
    # Gone: five publications are missed.
    conn.session.transport_closed()
    for i in range(5):
        await node.publish("chat:r", raw(i))
    back = Conn(node)
    await back.connect()
    result = (
        await back.call(
            "subscribe", {"channel": "chat:r", "recover": True, "offset": 1, "epoch": epoch}
        )
    )["subscribe"]
    assert result["recovered"] is True and result["was_recovering"] is True
    assert [p["offset"] for p in result["publications"]] == [2, 3, 4, 5, 6]
    assert result["offset"] == 6 and result["epoch"] == epoch
    # Too far behind (the window is 10): nothing, and recovered false.
    for i in range(12):
        await node.publish("chat:r", raw(i))
    late = Conn(node)
    await late.connect()
    result = (
        await late.call(
            "subscribe", {"channel": "chat:r", "recover": True, "offset": 1, "epoch": epoch}
        )
    )["subscribe"]
    assert result["recovered"] is False and "publications" not in result
    wrong = Conn(node)
    await wrong.connect()
    result = (
        await wrong.call(
            "subscribe", {"channel": "chat:r", "recover": True, "offset": 17, "epoch": "other"}
        )
    )["subscribe"]
    assert result["recovered"] is False and result["epoch"] == epoch


@pytest.mark.gen_test
async def test_nothing_for_a_channel_arrives_before_its_subscribe_reply() -> None:
    node = make_node()
    watcher = Conn(node)
    await watcher.connect()
    (cid,) = await watcher.send({"subscribe": {"channel": "chat:order"}})
    await flush()
    messages = watcher.transport.take()
    reply_at = next(i for i, m in enumerate(messages) if m.get("id") == cid)
    join_at = next(i for i, m in enumerate(messages) if "join" in m.get("push", {}))
    assert reply_at < join_at  # the client's own join comes after the reply


@pytest.mark.gen_test
async def test_presence_join_leave_between_two_clients() -> None:
    node = make_node()
    a, b = Conn(node), Conn(node)
    await a.connect(token("alice", info={"name": "A"}))
    await a.call("subscribe", {"channel": "chat:p"})
    await b.connect(token("bob"))
    await b.call("subscribe", {"channel": "chat:p"})
    await flush()
    joins = [
        m["push"]["join"]["info"]["user"] for m in a.transport.take() if "join" in m.get("push", {})
    ]
    assert joins == ["alice", "bob"]  # its own join comes after its subscribe reply
    presence = (await a.call("presence", {"channel": "chat:p"}))["presence"]["presence"]
    assert {v["user"] for v in presence.values()} == {"alice", "bob"}
    assert presence[a.session.id]["conn_info"] == {"name": "A"}
    stats = (await a.call("presence_stats", {"channel": "chat:p"}))["presence_stats"]
    assert stats == {"num_clients": 2, "num_users": 2}
    await b.call("unsubscribe", {"channel": "chat:p"})
    await flush()
    leaves = [
        m["push"]["leave"]["info"]["user"]
        for m in a.transport.take()
        if "leave" in m.get("push", {})
    ]
    assert leaves == ["bob"]


@pytest.mark.gen_test
async def test_history_command_and_client_publish() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    await conn.call("subscribe", {"channel": "chat:h"})
    assert (await conn.call("publish", {"channel": "chat:h", "data": {"m": 1}}))["publish"] == {}
    await flush()
    pub = next(m["push"]["pub"] for m in conn.transport.take() if "pub" in m.get("push", {}))
    assert pub["info"]["user"] == "alice"
    history = (await conn.call("history", {"channel": "chat:h", "limit": 10}))["history"]
    assert [p["data"] for p in history["publications"]] == [{"m": 1}]
    err = await conn.call(
        "history", {"channel": "chat:h", "limit": 10, "since": {"offset": 0, "epoch": "x"}}
    )
    assert err["error"]["code"] == 112


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("subscribe", {"channel": "nope:x"}, 102),
        ("subscribe", {"channel": "closed:x"}, 103),
        ("subscribe", {"channel": "private:x"}, 103),
        ("subscribe", {"channel": "x" * 300}, 107),
        ("publish", {"channel": "news", "data": 1}, 103),
        ("presence", {"channel": "news"}, 108),
        ("history", {"channel": "news"}, 108),
        ("presence", {"channel": "chat:notsubscribed"}, 103),
        ("rpc", {"method": "anything", "data": {}}, 108),  # no RPC handler: Centrifugo's 108
        ("sub_refresh", {"channel": "news", "token": "x"}, 103),
    ],
)
@pytest.mark.gen_test
async def test_refusals_carry_the_spec_code(
    method: str, params: dict[str, object], code: int
) -> None:
    conn = Conn(make_node())
    await conn.connect()
    result = await conn.call(method, params)
    assert result["error"]["code"] == code
    assert conn.transport.closed is None  # a refusal is not a disconnect


@pytest.mark.gen_test
async def test_already_subscribed_and_channel_limit() -> None:
    conn = Conn(make_node(max_channels_per_client=2))
    await conn.connect()
    await conn.call("subscribe", {"channel": "a"})
    assert (await conn.call("subscribe", {"channel": "a"}))["error"]["code"] == 105
    await conn.call("subscribe", {"channel": "b"})
    assert (await conn.call("subscribe", {"channel": "c"}))["error"]["code"] == 106


@pytest.mark.gen_test
async def test_private_channel_with_a_subscription_token() -> None:
    conn = Conn(make_node())
    await conn.connect(token("alice"))
    good = token("alice", channel="private:room")
    assert "subscribe" in await conn.call("subscribe", {"channel": "private:room", "token": good})
    other_user = token("bob", channel="private:room2")
    assert (await conn.call("subscribe", {"channel": "private:room2", "token": other_user}))[
        "error"
    ]["code"] == 103
    expired = token("alice", ttl=-60, channel="private:room3")
    assert (await conn.call("subscribe", {"channel": "private:room3", "token": expired}))["error"][
        "code"
    ] == 109


@pytest.mark.parametrize(
    "bad",
    [
        token(secret="wrong-secret-wrong-secret-wrong-secret"),
        jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, key=None, algorithm="none"),
        token(alg="HS512"),  # not an accepted algorithm
        token(ttl=None),  # no exp
        "not.a.token",
        "garbage",
    ],
    ids=["bad-signature", "alg-none", "other-alg", "no-exp", "malformed", "garbage"],
)
@pytest.mark.gen_test
async def test_invalid_connection_tokens_disconnect_with_3500(bad: str) -> None:
    conn = Conn(make_node())
    await conn.send({"connect": {"token": bad}})
    await flush()
    assert conn.transport.closed == (3500, "invalid token")
    pushes = [m for m in conn.transport.messages() if "push" in m]
    assert pushes[-1]["push"]["disconnect"] == {
        "code": 3500,
        "reason": "invalid token",
        "reconnect": False,
    }


@pytest.mark.gen_test
async def test_hs_rs_confusion_is_refused() -> None:
    # A token HMAC-signed with the RSA public key as the secret must not verify.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from gateway.realtime.auth import TokenInvalid, TokenVerifier, VerifierSettings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = TokenVerifier(VerifierSettings(algorithms=("RS256",), public_key=pem))
    good = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    assert (await verifier.connection(good)).user == "a"
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "a", "exp": int(time.time()) + 60}).encode())
    sig = b64(hmac.new(pem.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(TokenInvalid):
        await verifier.connection(f"{header}.{body}.{sig}")


@pytest.mark.gen_test
async def test_expired_token_is_109_and_the_socket_stays_open() -> None:
    conn = Conn(make_node())
    result = await conn.connect(token(ttl=-60))
    assert result["error"] == {"code": 109, "message": "token expired"}
    assert conn.transport.closed is None


@pytest.mark.gen_test
async def test_anonymous_only_when_allowed() -> None:
    conn = Conn(make_node())
    assert (await conn.connect(""))["error"]["code"] == 101
    anon = Conn(make_node(allow_anonymous=True))
    assert "connect" in await anon.connect("")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", 3501),
        ('{"id":1,"subscribe":{"channel":"a"}}', 3501),  # before connect
        ('{"id":1,"presence":"x"}', 3501),
    ],
)
@pytest.mark.gen_test
async def test_protocol_violations_disconnect(frame: str, code: int) -> None:
    conn = Conn(make_node())
    await conn.session.handle_frame(frame)
    assert conn.transport.closed is not None and conn.transport.closed[0] == code


@pytest.mark.gen_test
async def test_unknown_method_is_104() -> None:
    conn = Conn(make_node())
    await conn.connect()
    await conn.session.handle_frame('{"id":9,"frobnicate":{}}')
    await flush()
    assert conn.transport.take() == [
        {"id": 9, "error": {"code": 104, "message": "method not found"}}
    ]


@pytest.mark.gen_test
async def test_send_without_a_handler_is_3508() -> None:
    conn = Conn(make_node())
    await conn.connect()
    await conn.session.handle_frame('{"send":{"data":{}}}')
    assert conn.transport.closed == (3508, "not available")


@pytest.mark.gen_test
async def test_command_flood_gets_111_then_3013() -> None:
    conn = Conn(make_node(command_rate=1, command_burst=5))
    await conn.connect()
    frame = "\n".join(json.dumps({"id": i, "ping": {}}) for i in range(100, 108))
    await conn.session.handle_frame(frame)
    await flush()
    errors = [m["error"]["code"] for m in conn.transport.take() if "error" in m]
    assert errors and set(errors) == {111}
    await conn.session.handle_frame(
        "\n".join(json.dumps({"id": i, "ping": {}}) for i in range(200, 220))
    )
    assert conn.transport.closed == (3013, "too many requests")


@pytest.mark.gen_test
async def test_a_socket_that_never_connects_is_closed_as_stale() -> None:
    conn = Conn(make_node(connect_timeout=1.0))
    await asyncio.sleep(1.2)
    assert conn.transport.closed == (3502, "stale")


@pytest.mark.gen_test(timeout=10)
async def test_token_expiry_without_refresh_is_3005_and_refresh_extends() -> None:
    node = make_node(expired_close_delay=0.0)
    conn = Conn(node)
    await conn.connect(token(ttl=2))
    refreshed = Conn(node)
    await refreshed.connect(token(ttl=2))
    result = (await refreshed.call("refresh", {"token": token(ttl=60)}))["refresh"]
    assert result["expires"] is True and result["ttl"] > 50
    await asyncio.sleep(2.5)
    assert conn.transport.closed == (3005, "connection expired")
    assert refreshed.transport.closed is None
    other = Conn(node)
    await other.connect(token("alice"))
    await other.send({"refresh": {"token": token("mallory")}})
    assert other.transport.closed == (3500, "invalid token")


@pytest.mark.gen_test(timeout=10)
async def test_no_pong_is_3012() -> None:
    node = make_node(ping_interval=2.0, pong_timeout=1.0)
    node.start()
    try:
        quiet, talking = Conn(node), Conn(node)
        await quiet.connect()
        await talking.connect()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and quiet.transport.closed is None:
            await asyncio.sleep(0.1)
            if any(m == {} for m in talking.transport.take()):
                await talking.session.handle_frame("{}")  # the pong
        assert quiet.transport.closed == (3012, "no pong")
        assert talking.transport.closed is None
    finally:
        await node.close()


@pytest.mark.gen_test
async def test_slow_client_is_disconnected_with_3008() -> None:
    node = make_node(write_queue_max_bytes=4096)
    slow, fast = Conn(node), Conn(node)
    for conn in (slow, fast):
        await conn.connect()
        await conn.call("subscribe", {"channel": "news"})
    slow.transport.full = True  # the socket stops draining
    for _ in range(100):
        await node.publish("news", raw("x" * 100))
        await flush()
    assert slow.transport.closed == (3008, "slow")
    assert fast.transport.closed is None
    assert node.stats["slow_disconnects"] == 1


@pytest.mark.gen_test
async def test_server_side_subscriptions_from_the_token() -> None:
    node = make_node()
    conn = Conn(node)
    result = (await conn.connect(token(channels=["news", "chat:srv"])))["connect"]
    assert set(result["subs"]) == {"news", "chat:srv"}
    assert result["subs"]["chat:srv"]["recoverable"] is True
    await node.publish("news", raw({"x": 1}))
    await flush()
    assert any(m.get("push", {}).get("channel") == "news" for m in conn.transport.take())


@pytest.mark.gen_test
async def test_disconnect_cleans_subscriptions_and_presence() -> None:
    node = make_node(
        namespaces={"room": NamespaceConfig(presence=True, join_leave=True, allow_presence=True)}
    )
    a, b = Conn(node), Conn(node)
    for conn in (a, b):
        await conn.connect()
        await conn.call("subscribe", {"channel": "room:1"})
    b.session.transport_closed()
    await flush()
    assert node.hub.subscriber_count("room:1") == 1
    assert (await node.presence.stats("room:1")) == (1, 1)
    assert any("leave" in m.get("push", {}) for m in a.transport.take())
    assert b.session.id not in node.clients
    assert SECRET  # the fixture secret is the one the node verifies with
