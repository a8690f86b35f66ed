"""Hostile input to the realtime side, sans-I/O: frames, tokens, hook answers and Redis entries
that plain json.loads or PyJWT would let through. Each refusal has its protocol code."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from support.abuse import signed
from support.realtime import SECRET, Conn, flush, make_node, token

from gateway.config import NamespaceConfig
from gateway.realtime import jsonsafe
from gateway.realtime.auth import TokenExpired, TokenInvalid, TokenVerifier, VerifierSettings
from gateway.realtime.codes import ErrorReply
from gateway.realtime.hooks import UNAVAILABLE
from gateway.realtime.protocol import ProtocolError, decode_commands, encode, raw, reply


def future_exp() -> int:
    return int(time.time()) + 600


# -- empty commands (fault 1) -----------------------------------------------------------------


@pytest.mark.parametrize("frame", ["{}", '{"id":1}', "{}\n{}\n{}", '{"id":5,"nothing":{}}'])
@pytest.mark.gen_test
async def test_a_command_without_a_method_before_connect_is_3501(frame: str) -> None:
    conn = Conn(make_node())
    await conn.session.handle_frame(frame)
    assert conn.transport.closed == (3501, "bad request")


@pytest.mark.gen_test
async def test_an_empty_command_after_connect_is_a_pong() -> None:
    conn = Conn(make_node())
    await conn.connect()
    conn.session.ping()
    assert conn.session.ping_sent is not None
    await conn.session.handle_frame("{}")
    await flush()
    assert conn.session.ping_sent is None
    assert conn.transport.closed is None
    assert conn.transport.take() == [{}]  # the ping; nothing answers a pong


@pytest.mark.gen_test
async def test_empty_commands_are_rate_limited() -> None:
    conn = Conn(make_node(command_rate=1, command_burst=5))
    await conn.connect()
    await conn.session.handle_frame("\n".join(["{}"] * 20))
    assert conn.transport.closed == (3013, "too many requests")


@pytest.mark.gen_test
async def test_ids_without_a_method_are_104_then_111_then_3013() -> None:
    conn = Conn(make_node(command_rate=1, command_burst=5))
    await conn.connect()
    await conn.session.handle_frame("\n".join(json.dumps({"id": i}) for i in range(10, 30)))
    await flush()
    codes = [m["error"]["code"] for m in conn.transport.take() if "error" in m]
    assert codes[0] == 104 and codes[-1] == 111
    assert set(codes) == {104, 111}
    assert codes == sorted(codes)  # every 104 before the limiter starts refusing
    assert conn.transport.closed == (3013, "too many requests")


@pytest.mark.gen_test
async def test_a_closed_session_decodes_no_more_of_its_frame(monkeypatch: Any) -> None:
    # Thousands of commands in one frame before connect: the first one ends the connection
    # and the rest is never decoded (a 64 KiB frame of them would cost tens of ms).
    decoded: list[str] = []
    real = jsonsafe.loads

    def counting(text: str | bytes, max_depth: int = jsonsafe.MAX_DEPTH) -> Any:
        decoded.append(str(text))
        return real(text, max_depth)

    monkeypatch.setattr(jsonsafe, "loads", counting)
    conn = Conn(make_node())
    await conn.session.handle_frame("\n".join(["{}"] * 5000))
    assert conn.transport.closed == (3501, "bad request")
    assert len(decoded) == 1


# -- values JavaScript cannot read (faults 2 and 3) ------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"id":1,"connect":{"data":NaN}}',
        '{"id":1,"publish":{"channel":"c","data":Infinity}}',
        '{"id":1,"publish":{"channel":"c","data":[-Infinity]}}',
        '{"id":1,"publish":{"channel":"c","data":1e999}}',
        '{"id":1,"subscribe":{"channel":"chat:\\ud800"}}',
        '{"id":1,"publish":{"channel":"c","data":"\\udc00"}}',
        "[" * 60000,
        '{"id":1,"rpc":{"data":' + "[" * 63 + "]" * 63 + "}}",
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "overflow",
        "surrogate-channel",
        "surrogate-data",
        "60000-brackets",
        "depth-65",
    ],
)
def test_frames_json_cannot_carry_are_protocol_errors(frame: str) -> None:
    with pytest.raises(ProtocolError):
        list(decode_commands(frame))


def test_a_command_at_the_depth_limit_decodes() -> None:
    # The command is level 1, its params level 2: data may nest 62 more.
    frame = '{"id":1,"rpc":{"data":' + "[" * 62 + "]" * 62 + "}}"
    assert [c.method for c in decode_commands(frame)] == ["rpc"]


@pytest.mark.parametrize(
    "frame",
    [
        '{"id":1,"connect":{"token":"","data":NaN}}',
        '{"id":1,"connect":{"token":"","name":"\\ud800"}}',
        "[" * 60000,
    ],
)
@pytest.mark.gen_test
async def test_hostile_json_disconnects_with_3501(frame: str) -> None:
    conn = Conn(make_node(allow_anonymous=True))
    await conn.session.handle_frame(frame)
    assert conn.transport.closed == (3501, "bad request")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_encoder_never_writes_a_non_finite_number(value: float) -> None:
    with pytest.raises(ValueError):
        raw({"x": value})
    with pytest.raises(ValueError):
        encode({"a": [value]})
    with pytest.raises(ValueError):
        reply(1, "rpc", {"data": value})


# -- a subscription is rolled back whatever fails ---------------------------------------------


@pytest.mark.gen_test
async def test_a_failed_subscribe_leaves_no_half_registered_subscription() -> None:
    node = make_node(namespaces={"room": NamespaceConfig(presence=True)})

    async def broken_add(*args: Any) -> None:
        raise RuntimeError("a bug, not an engine outage")

    node.presence.add = broken_add  # type: ignore[method-assign]
    conn = Conn(node)
    await conn.connect()
    answer = await conn.call("subscribe", {"channel": "room:1"})
    assert answer["error"]["code"] == 100
    assert "room:1" not in conn.session.subs
    assert node.hub.subscriber_count("room:1") == 0
    # Not stuck as "already subscribed": once the engine works, the client gets in.
    del node.presence.add
    assert "subscribe" in await conn.call("subscribe", {"channel": "room:1"})


# -- token claims (fault 4 and strict claims) -------------------------------------------------


def verifier() -> TokenVerifier:
    return TokenVerifier(VerifierSettings(secret=SECRET))


@pytest.mark.parametrize(
    "payload",
    [
        '{"sub":"a","exp":"9999999999"}',
        '{"sub":"a","exp":true}',
        '{"sub":"a","exp":false}',
        '{"sub":"a","exp":null}',
        '{"sub":"a","exp":[9999999999]}',
        '{"sub":"a","exp":1e400}',
        '{"sub":"a","exp":NaN}',
        '{"sub":"a","exp":Infinity}',
        '{"sub":"a","exp":1' + "0" * 400 + "}",  # an int no float can hold
        '{"sub":"a","exp":%d,"nbf":"0"}',
        '{"sub":"a","exp":%d,"iat":"0"}',
        '{"sub":"a","exp":%d,"iat":true}',
        '{"sub":"a","exp":%d,"info":{"x":NaN}}',
        '{"sub":"\\ud800","exp":%d}',
        '{"sub":"a","exp":%d,"info":' + "[" * 64 + "]" * 64 + "}",
        "[1,2]",
        '"just a string"',
    ],
)
@pytest.mark.gen_test
async def test_claims_that_are_not_strict_json_or_numeric_times_are_invalid(payload: str) -> None:
    tok = signed(payload.replace("%d", str(future_exp())))
    with pytest.raises(TokenInvalid):
        await verifier().connection(tok)


@pytest.mark.gen_test
async def test_subscription_tokens_get_the_same_claim_checks() -> None:
    tok = signed('{"sub":"a","channel":"private:1","exp":"9999999999"}')
    with pytest.raises(TokenInvalid):
        await verifier().subscription(tok)


@pytest.mark.gen_test
async def test_numeric_times_still_work() -> None:
    exp = future_exp()
    creds = await verifier().connection(
        signed(f'{{"sub":"a","exp":{exp}.5,"iat":{exp - 700},"nbf":{exp - 700.5}}}')
    )
    assert creds.expire_at == exp + 0.5
    with pytest.raises(TokenExpired):
        await verifier().connection(signed('{"sub":"a","exp":1000}'))


@pytest.mark.gen_test
async def test_a_string_exp_connect_is_3500_not_a_connection_that_never_expires() -> None:
    conn = Conn(make_node())
    await conn.send({"connect": {"token": signed('{"sub":"a","exp":"9999999999"}')}})
    await flush()
    assert conn.transport.closed == (3500, "invalid token")


@pytest.mark.gen_test
async def test_a_bool_exp_is_3500_not_109() -> None:
    conn = Conn(make_node())
    await conn.send({"connect": {"token": signed('{"sub":"a","exp":true}')}})
    await flush()
    assert conn.transport.closed == (3500, "invalid token")


@pytest.mark.gen_test
async def test_a_string_exp_subscription_token_is_3500() -> None:
    conn = Conn(make_node())
    await conn.connect(token("a"))
    sub_token = signed('{"sub":"a","channel":"private:1","exp":"9999999999"}')
    await conn.send({"subscribe": {"channel": "private:1", "token": sub_token}})
    await flush()
    assert conn.transport.closed == (3500, "invalid token")
    assert "private:1" not in conn.session.subs


# -- hook answers -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_hook_answers_json_cannot_carry_are_temporary_errors() -> None:
    import tornado.web
    from support.procs import free_port

    from gateway.realtime.hooks import HttpHooks

    bodies = {
        "nan": b'{"result":{"data":NaN}}',
        "inf": b'{"result":{"data":[Infinity]}}',
        "surrogate": b'{"result":{"data":"\\ud800"}}',
        "deep": b'{"result":{"data":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        "bomb": b"[" * 60000,
    }

    class Answer(tornado.web.RequestHandler):
        def post(self, name: str) -> None:
            self.finish(bodies[name])

    port = free_port()
    server = tornado.web.Application([("/(.*)", Answer)]).listen(port, "127.0.0.1")
    hooks = HttpHooks(lambda: ("127.0.0.1", port), "key", timeout=2)
    try:
        for name in bodies:
            with pytest.raises(ErrorReply) as info:
                await hooks.call(f"/{name}", "rpc", {})
            assert info.value.error == UNAVAILABLE, name
    finally:
        hooks.close()
        server.stop()


# -- entries read back from Redis -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"user":"u","client":"c","conn_info":NaN}',
        b'{"user":"u","client":"c","chan_info":{"x":Infinity}}',
        b'{"user":"\\ud800","client":"c"}',
        b"[" * 60000,
        b"[1,2]",
    ],
)
def test_redis_client_info_is_decoded_strictly(body: bytes) -> None:
    from gateway.realtime.redis import _wire_info

    with pytest.raises(ValueError):
        _wire_info(body)


def test_redis_client_info_round_trips() -> None:
    from gateway.realtime.protocol import ClientInfo, Raw
    from gateway.realtime.redis import _wire_info

    info = ClientInfo("u", "c", Raw(b'{"name":"Ada"}'), Raw(b"[1,2]"))
    assert _wire_info(info.encoded()) == info


@pytest.mark.gen_test
async def test_a_bad_join_from_redis_is_dropped_not_raised() -> None:
    # Raised in the pub/sub reader, it would tear the connection down and reconnect.
    from support.procs import free_port

    from gateway.realtime.redis import RedisEngine

    class Handler:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def handle_publication(self, *args: Any) -> None:
            self.events.append(args)

        def handle_join(self, *args: Any) -> None:
            self.events.append(args)

        def handle_leave(self, *args: Any) -> None:
            self.events.append(args)

        def events_lost(self, channels: list[str]) -> None: ...

        def begin_batch(self) -> None: ...

        def end_batch(self) -> None: ...

        node_id = "b" * 32

        def handle_control(self, message: bytes) -> None:
            self.events.append(("control", message))

    engine = RedisEngine([f"redis://127.0.0.1:{free_port()}/0"], prefix="t")
    handler = Handler()
    engine.run(handler)
    try:
        engine.deliver("t:p:chat", b'j 0 e\n{"user":"u","client":"c","conn_info":NaN}')
        engine.deliver("t:p:chat", b'l 0 e\n{"user":"u","client":"c","conn_info":NaN}')
        assert handler.events == []
        engine.deliver("t:p:chat", b'j 0 e\n{"user":"u","client":"c"}')
        assert len(handler.events) == 1
    finally:
        await engine.close()
