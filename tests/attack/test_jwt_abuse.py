"""Forged and malformed tokens against a real gateway: an expired token is 109 (the SDK fetches
a new one), anything else that cannot be trusted is 3500 (terminal), and the gateway keeps
serving everybody else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.abuse import (
    b64,
    closed_with,
    connected,
    log_mark,
    run,
    signed,
    still_serving,
    ws_connect,
)
from support.procs import GatewayProcess, standin_command
from support.realtime import SECRET, token
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE = 16384
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": standin_command()},
        "auth": {"algorithms": ["HS256", "RS256"], "public_key": PUBLIC_PEM},
        "realtime": {
            "max_message_size": MAX_MESSAGE,
            "namespaces": {"private": {"private": True}},
        },
    }
    with GatewayProcess(
        tmp_path_factory.mktemp("jwt-abuse"), config, env={"WS_SECRET": SECRET}
    ) as gateway:
        gateway.wait_ready()
        yield gateway


def exp() -> int:
    return int(time.time()) + 600


def unsigned(payload: dict[str, Any], alg: str) -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


def connect_answer(gw: GatewayProcess, tok: Any) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """Send a connect command with ``tok``: (what came back, close code or (0, "open"))."""

    async def go() -> tuple[list[dict[str, Any]], tuple[int, str]]:
        mark = log_mark(gw)
        async with ws_connect(gw, max_size=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": tok}}))
            try:
                got = [json.loads(line) for line in (await ws.recv()).split("\n")]
            except ConnectionClosed:
                got = []
            if any("connect" in m or "error" in m for m in got):
                result: tuple[list[dict[str, Any]], tuple[int, str]] = (got, (0, "open"))
            else:
                result = (got, await closed_with(ws, timeout=5))
        await still_serving(gw, mark)
        return result

    answer: tuple[list[dict[str, Any]], tuple[int, str]] = run(go())
    return answer


FORGED = {
    "alg-none": lambda: unsigned({"sub": "a", "exp": exp()}, "none"),
    "alg-None": lambda: unsigned({"sub": "a", "exp": exp()}, "None"),
    "hs-signed-with-the-public-key": lambda: signed(
        json.dumps({"sub": "a", "exp": exp()}), secret=PUBLIC_PEM
    ),
    "rs-header-hmac-signature": lambda: signed(
        json.dumps({"sub": "a", "exp": exp()}),
        secret=PUBLIC_PEM,
        header='{"alg":"RS256","typ":"JWT"}',
    ),
    "alg-not-accepted": lambda: token(alg="HS512"),
    "wrong-signature": lambda: token(secret="another-secret-that-is-long-enough-too!!"),
    "no-exp": lambda: token(ttl=None),
    "string-exp": lambda: signed('{"sub":"a","exp":"9999999999"}'),
    "bool-exp": lambda: signed('{"sub":"a","exp":true}'),
    "nan-exp": lambda: signed('{"sub":"a","exp":NaN}'),
    "infinite-exp": lambda: signed('{"sub":"a","exp":1e400}'),
    "huge-int-exp": lambda: signed('{"sub":"a","exp":1' + "0" * 400 + "}"),
    "string-nbf": lambda: signed('{"sub":"a","exp":%d,"nbf":"0"}' % exp()),  # noqa: UP031
    "string-iat": lambda: signed('{"sub":"a","exp":%d,"iat":"0"}' % exp()),  # noqa: UP031
    "nan-in-info": lambda: signed('{"sub":"a","exp":%d,"info":[NaN]}' % exp()),  # noqa: UP031
    "surrogate-sub": lambda: signed('{"sub":"\\ud800","exp":%d}' % exp()),  # noqa: UP031
    "deep-claims": lambda: signed(
        '{"sub":"a","exp":%d,"info":%s}' % (exp(), "[" * 5000 + "]" * 5000)  # noqa: UP031
    ),
    "array-payload": lambda: signed("[1,2]"),
    "string-payload": lambda: signed('"sub"'),
    "null-payload": lambda: signed("null"),
    "payload-not-utf8": lambda: signed(b'{"sub":"\xff","exp":9999999999}'),
    "payload-not-base64": lambda: "eyJhbGciOiJIUzI1NiJ9.!!!!.c2ln",
    "garbage-near-the-size-limit": lambda: "x" * (MAX_MESSAGE - 100),
    "four-segments": lambda: "a.b.c.d",
}


@pytest.mark.parametrize("name", list(FORGED))
def test_untrustworthy_connect_tokens_are_3500(gw: GatewayProcess, name: str) -> None:
    messages, closed = connect_answer(gw, FORGED[name]())
    assert closed == (3500, "invalid token"), messages
    assert messages[-1]["push"]["disconnect"] == {
        "code": 3500,
        "reason": "invalid token",
        "reconnect": False,
    }


def test_an_rs256_token_signed_with_the_private_key_connects(gw: GatewayProcess) -> None:
    # The control for the confusion cases above: RS256 itself works.
    tok = jwt.encode({"sub": "rs", "exp": exp()}, RSA_KEY, algorithm="RS256")
    messages, closed = connect_answer(gw, tok)
    assert closed == (0, "open") and "connect" in messages[0]


def test_an_expired_token_is_109_and_the_socket_stays_open(gw: GatewayProcess) -> None:
    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token(ttl=-60)}}))
            assert json.loads(await ws.recv()) == {
                "id": 1,
                "error": {"code": 109, "message": "token expired"},
            }
            await connected(ws)  # a fresh token on the same socket
        await still_serving(gw, mark)

    run(go())


def test_a_token_that_is_not_a_string_is_107(gw: GatewayProcess) -> None:
    messages, closed = connect_answer(gw, {"sub": "a"})
    assert closed == (0, "open")
    assert messages == [{"id": 1, "error": {"code": 107, "message": "bad request"}}]


def test_a_big_signed_token_under_the_size_limit_connects(gw: GatewayProcess) -> None:
    tok = token("big", info={"blob": "y" * (MAX_MESSAGE // 2)})
    messages, closed = connect_answer(gw, tok)
    assert closed == (0, "open") and "connect" in messages[0]


def test_a_token_over_the_size_limit_is_1009(gw: GatewayProcess) -> None:
    _, closed = connect_answer(gw, token("huge", info={"blob": "y" * MAX_MESSAGE}))
    assert closed[0] == 1009


@pytest.mark.parametrize(
    "payload",
    [
        '{"sub":"a","channel":"private:x","exp":"9999999999"}',
        '{"sub":"a","channel":"private:x","exp":false}',
        '{"sub":"a","channel":"private:x","exp":%d,"info":{"n":-Infinity}}',
        '{"sub":"a","channel":"private:\\udc00","exp":%d}',
    ],
    ids=["string-exp", "bool-exp", "infinity-in-info", "surrogate-channel"],
)
def test_untrustworthy_subscription_tokens_are_3500(gw: GatewayProcess, payload: str) -> None:
    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as ws:
            await connected(ws, "a")
            sub_token = signed(payload.replace("%d", str(exp())))
            await ws.send(
                json.dumps({"id": 2, "subscribe": {"channel": "private:x", "token": sub_token}})
            )
            assert await closed_with(ws, timeout=5) == (3500, "invalid token")
        await still_serving(gw, mark)

    run(go())


def test_subscription_tokens_for_another_channel_or_expired(gw: GatewayProcess) -> None:
    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as ws:
            await connected(ws, "a")
            other = token("a", channel="private:other")
            expired = token("a", ttl=-60, channel="private:x")
            good = token("a", channel="private:x")
            for i, tok in enumerate((other, expired, good), start=2):
                await ws.send(
                    json.dumps({"id": i, "subscribe": {"channel": "private:x", "token": tok}})
                )
            answers: list[dict[str, Any]] = []
            while len(answers) < 3:
                answers += [json.loads(line) for line in (await ws.recv()).split("\n")]
            assert answers[:2] == [
                {"id": 2, "error": {"code": 103, "message": "permission denied"}},
                {"id": 3, "error": {"code": 109, "message": "token expired"}},
            ]
            assert answers[2]["id"] == 4 and answers[2]["subscribe"]["expires"] is True
        await still_serving(gw, mark)

    run(go())


def test_a_refresh_with_a_string_exp_is_3500(gw: GatewayProcess) -> None:
    async def go() -> None:
        mark = log_mark(gw)
        async with ws_connect(gw) as ws:
            await connected(ws, "a")
            forged = signed('{"sub":"a","exp":"9999999999"}')
            await ws.send(json.dumps({"id": 2, "refresh": {"token": forged}}))
            assert await closed_with(ws, timeout=5) == (3500, "invalid token")
        await still_serving(gw, mark)

    run(go())
