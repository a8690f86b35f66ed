"""What the logs never show: token-like query values, and anything shaped like a JWT."""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse

import pytest
from support.realtime import token

from gateway.observability import log_access, redact_uri


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT = token("logged")
UNSIGNED = b64(b'{"alg":"none"}') + "." + b64(b'{"sub":"x"}') + "."  # JWS, empty signature
SPACED = b64(b'{ "alg": "HS256" }') + "." + b64(b'{"sub":"x"}') + ".c2ln"  # header eyAi...
MULTILINE = b64(b'{\n  "alg": "HS256"\n}') + "." + b64(b'{"sub":"x"}') + ".c2ln"  # ewog...
JWE = ".".join(  # RFC 7516 compact: header.key.iv.ciphertext.tag (dir: empty key)
    [b64(b'{"alg":"dir","enc":"A256GCM"}'), "", "aXZpdml2aXZpdg", "Y2lwaGVydGV4dA", "dGFn"]
)


def test_named_secret_parameters_are_redacted() -> None:
    uri = "/search?q=shoes&token=abc123&page=2&API_KEY=k&password=hunter2#top"
    assert redact_uri(uri) == (
        "/search?q=shoes&token=[redacted]&page=2&API_KEY=[redacted]&password=[redacted]#top"
    )


def test_a_connect_request_in_the_query_is_redacted_whole() -> None:
    # sse / uni_sse / uni_websocket take the connect request (token, connect data) in the URL.
    request = urllib.parse.quote('{"token":"opaque-not-a-jwt","data":{"secret":1}}')
    assert redact_uri(f"/connection/uni_sse?cf_connect={request}&v=2") == (
        "/connection/uni_sse?cf_connect=[redacted]&v=2"
    )


@pytest.mark.parametrize("name", ["auth", "t", "session", "connect", "x"])
def test_a_jwt_is_redacted_whatever_the_parameter_name(name: str) -> None:
    assert redact_uri(f"/connection/websocket?{name}={JWT}&x=1") == (
        f"/connection/websocket?{name}=[redacted]&x=1"
    )
    assert redact_uri(f"/live?a=1&{name}={JWT}#frag") == f"/live?a=1&{name}=[redacted]#frag"


@pytest.mark.parametrize(
    "compact", [UNSIGNED, SPACED, MULTILINE, JWE], ids=["unsigned", "spaced", "multiline", "jwe"]
)
def test_every_compact_jws_and_jwe_form_is_redacted(compact: str) -> None:
    assert redact_uri(f"/p?auth={compact}&n=2") == "/p?auth=[redacted]&n=2"


def test_a_jwt_inside_an_encoded_value_or_the_path_is_redacted() -> None:
    assert JWT not in redact_uri(f"/signin?next=%2Fchat%3Ft%3D{JWT}")
    assert redact_uri(f"/invite/{JWT}/accept") == "/invite/[redacted]/accept"


def test_a_childs_line_loses_its_jwts() -> None:
    line = f'request "GET /live?t={JWT} HTTP/1.1" from 127.0.0.1; bearer {JWT}'
    assert redact_uri(line) == (
        'request "GET /live?t=[redacted] HTTP/1.1" from 127.0.0.1; bearer [redacted]'
    )


@pytest.mark.parametrize(
    "uri",
    [
        "/download?file=report.final.pdf",
        "/docs?v=1.2.3",
        "/go?host=ewan.example.com",
        "/search?q=eyes.on.me",
        "/e?id=eyJustAWord",
        "/plain/path",
    ],
)
def test_ordinary_values_with_dots_are_kept(uri: str) -> None:
    assert redact_uri(uri) == uri


def test_the_access_line_and_its_fields_carry_no_jwt(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        log_access("GET", f"/connection/websocket?auth={JWT}", 101, None, "127.0.0.1", 0.01)
    (record,) = caplog.records
    assert JWT not in record.getMessage()
    assert record.fields["path"] == "/connection/websocket?auth=[redacted]"  # type: ignore[attr-defined]
    assert JWT not in json.dumps(record.fields)  # type: ignore[attr-defined]
