"""The gateway in front of a real `next start` of the bundled app: faithful responses."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import uuid
from pathlib import Path

import pytest
from support.procs import GatewayProcess, group_members, http_request, wait_until

from integration.conftest import direct_url

# Differ between two responses by nature, or are per-connection (hop-by-hop).
VOLATILE = {"date", "connection", "keep-alive", "transfer-encoding"}


def comparable(headers: object, body: bytes | None = None) -> list[tuple[str, str]]:
    """Headers to compare. Framing is per hop: when Next chunked a body the gateway had whole,
    the gateway may send it with a Content-Length, which must then be exact."""
    pairs = [(k.lower(), v) for k, v in headers.items() if k.lower() not in VOLATILE]  # type: ignore[attr-defined]
    if body is not None:
        assert ("content-length", str(len(body))) in pairs or all(
            k != "content-length" for k, _ in pairs
        )
        pairs = [(k, v) for k, v in pairs if k != "content-length"]
    return sorted(pairs)


def test_prerendered_page_is_byte_identical_to_direct(next_gateway: GatewayProcess) -> None:
    identity = {"Accept-Encoding": "identity"}
    status, headers, body = next_gateway.request("/about", headers=identity)
    d_status, d_headers, d_body = http_request(direct_url(next_gateway, "/about"), headers=identity)
    assert status == d_status == 200
    assert body == d_body
    if "Content-Length" in d_headers:
        assert comparable(headers) == comparable(d_headers)
    else:
        assert comparable(headers, body) == comparable(d_headers, d_body)
    # Compressed by the gateway (docs/proxy.md, Compression): the same bytes once decoded, and
    # the same headers but for the coding and the variant's ETag.
    status, headers, gz_body = next_gateway.request("/about", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz_body) == d_body and b"<h1>About</h1>" in d_body
    assert headers["ETag"] == d_headers["ETag"][:-1] + '-gzip"'
    differ = {"etag", "content-encoding", "content-length"}
    assert [p for p in comparable(headers) if p[0] not in differ] == [
        p for p in comparable(d_headers) if p[0] not in differ
    ]


def test_dynamic_page_is_rendered_per_request(next_gateway: GatewayProcess) -> None:
    status, _, first = next_gateway.request("/time")
    _, _, second = next_gateway.request("/time")
    assert status == 200
    stamp = re.compile(rb'id="rendered-at">([^<]+)<')
    m1, m2 = stamp.search(first), stamp.search(second)
    assert m1 and m2 and m1.group(1) != m2.group(1)
    assert f'id="host">127.0.0.1:{next_gateway.port}<'.encode() in first


def test_request_body_and_repeated_response_headers_pass_through(
    next_gateway: GatewayProcess,
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    status, headers, body = next_gateway.request(
        "/api/echo?x=1",
        method="POST",
        body=payload,
        headers={"Content-Type": "application/octet-stream", "X-Custom": "kept"},
    )
    assert status == 200
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert echo["length"] == len(payload)
    assert echo["sha256"] == hashlib.sha256(payload).hexdigest()
    assert echo["headers"]["x-custom"] == "kept"
    assert echo["headers"]["host"] == f"127.0.0.1:{next_gateway.port}"
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert headers["X-Echo"] == "yes"


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_passes_through(next_gateway: GatewayProcess, method: str) -> None:
    body = b"x" * 10 if method in ("PUT", "PATCH") else None
    status, headers, got = next_gateway.request("/api/echo", method=method, body=body)
    d_status, d_headers, d_got = http_request(
        direct_url(next_gateway, "/api/echo"), method=method, body=body
    )
    assert status == d_status == 200
    if "Content-Length" in d_headers or method == "HEAD":
        assert headers.get("Content-Length") == d_headers.get("Content-Length")
    else:  # Next chunked it; the gateway had it whole and may send it with its exact length
        assert headers.get("Content-Length") in (None, str(len(got)))
    if method == "HEAD":
        assert got == b"" == d_got
    else:
        assert json.loads(got)["method"] == method
        assert json.loads(got)["length"] == (10 if body else 0)


def test_conditional_request_gets_nexts_304(next_gateway: GatewayProcess) -> None:
    _, headers, _ = next_gateway.request("/about")
    etag = headers["ETag"]
    status, headers304, body = next_gateway.request("/about", headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    assert headers304["ETag"] == etag


def test_not_found_comes_from_next(next_gateway: GatewayProcess) -> None:
    status, _, body = next_gateway.request("/no-such-page")
    assert status == 404 and b"could not be found" in body


def test_keep_alive_pool_reuses_connections(next_gateway: GatewayProcess) -> None:
    before = next_gateway.ready_state()["pool"]  # type: ignore[index]
    for _ in range(30):
        assert next_gateway.request("/about")[0] == 200
    after = next_gateway.ready_state()["pool"]  # type: ignore[index]
    assert after["reused"] - before["reused"] >= 28
    assert after["opened"] - before["opened"] <= 2
    assert after["in_use"] == 0


def server_action_id(page: bytes) -> str:
    m = re.search(rb'name="(\$ACTION_ID_[0-9a-f]+)"', page)
    assert m, "the notes page has no Server Action form"
    return m.group(1).decode()


def post_form(
    gw: GatewayProcess, path: str, fields: dict[str, str], origin: str
) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    status, _, resp = gw.request(
        path,
        method="POST",
        body=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": origin,
            "Accept": "text/html",
            # A client cannot make Next believe the request was for another host.
            "X-Forwarded-Host": "evil.example",
        },
    )
    return status, resp


def test_server_action_form_works_through_the_gateway(next_gateway: GatewayProcess) -> None:
    note = f"note {uuid.uuid4().hex[:8]}"
    action = server_action_id(next_gateway.request("/notes")[2])
    status, page = post_form(
        next_gateway, "/notes", {action: "", "text": note}, f"http://127.0.0.1:{next_gateway.port}"
    )
    assert status == 200, page[:500]
    assert note.encode() in next_gateway.request("/notes")[2]


def test_server_action_from_a_foreign_origin_is_refused_by_next(
    next_gateway: GatewayProcess,
) -> None:
    note = f"forged {uuid.uuid4().hex[:8]}"
    action = server_action_id(next_gateway.request("/notes")[2])
    status, _ = post_form(next_gateway, "/notes", {action: "", "text": note}, "http://evil.example")
    assert status == 500
    assert note.encode() not in next_gateway.request("/notes")[2]


def test_kill9_of_next_restarts_it_and_pages_come_back(next_build: Path, tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, {"next": {"dir": str(next_build)}}) as gw:
        gw.wait_ready(60)
        old = gw.child_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(
            lambda: (gw.ready_state() or {}).get("next", {}).get("pid") != old, 10, "the exit"
        )
        state = gw.wait_ready(60)
        assert state["next"]["pid"] != old
        assert group_members(old) == []
        assert gw.request("/about")[0] == 200
