"""Compression at the gateway (docs/proxy.md, "Compression"): against a real `next start` for
what the bundled app has (prerendered and dynamic pages, 304s, Suspense, Server Actions, its
no-transform streams), and against a stand-in whose responses are shaped by the query string
(tests/support/shaped_child.py) for the rules the app has no page for."""

from __future__ import annotations

import gzip
import http.client
import json
import statistics
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from urllib.parse import quote

import brotli
import pytest
from support.codings import decode
from support.procs import ROOT, GatewayProcess, open_response

BROWSER = {"Accept-Encoding": "gzip, deflate, br"}
SHAPED_CHILD = ROOT / "tests" / "support" / "shaped_child.py"
CACHE_BYTES = 64 * 1024


def vary_names(headers: http.client.HTTPMessage) -> list[str]:
    return [
        token.strip().lower()
        for value in headers.get_all("Vary") or []
        for token in value.split(",")
        if token.strip()
    ]


class DecodingReader:
    """``read1`` of a streamed response, decoded as it arrives: a piece the gateway sent is
    readable at once only if it was flushed through the compressor."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp
        coding = resp.headers.get("Content-Encoding")
        self.coding = coding
        self._decode: Callable[[bytes], bytes]
        if coding == "br":
            self._decode = brotli.Decompressor().process
        elif coding == "gzip":
            self._decode = zlib.decompressobj(31).decompress
        else:
            assert coding is None, coding
            self._decode = bytes

    def read1(self, n: int) -> bytes:
        while True:
            raw = self.resp.read1(n)
            if not raw:
                return b""
            out = self._decode(raw)
            if out:
                return out


def read_until(reader: DecodingReader, marker: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, f"{marker!r} did not arrive; got {data[-300:]!r}"
        chunk = reader.read1(65536)
        assert chunk, f"the body ended before {marker!r}"
        data += chunk
    return data, time.monotonic()


# -- a real next start --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip, deflate", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("gzip;q=1.0, br;q=0.3", "gzip"),
        ("*", "br"),
        ("identity", None),
        ("br;q=0, gzip;q=0", None),
        (None, None),
    ],
)
def test_a_page_is_sent_in_the_coding_the_client_accepts_and_decodes_to_the_same_bytes(
    next_gateway: GatewayProcess, accept: str | None, coding: str | None
) -> None:
    _, _, identity = next_gateway.request("/about", headers={"Accept-Encoding": "identity"})
    status, headers, body = next_gateway.request(
        "/about", headers={"Accept-Encoding": accept} if accept is not None else {}
    )
    assert status == 200
    assert headers.get("Content-Encoding") == coding
    assert headers.get_all("Content-Encoding") in (None, [coding])  # one coding, applied once
    assert decode(coding, body) == identity
    if coding is not None:
        assert len(body) < len(identity) / 2
        assert headers["Content-Length"] == str(len(body))  # a complete page: not chunked
    assert vary_names(headers).count("accept-encoding") == 1  # merged with Next's, not doubled
    assert vary_names(headers)[0] == "rsc"  # Next's own names kept, in order


@pytest.mark.parametrize("path", ["/notes", "/no-such-page", "/stream?ms=0"])
def test_dynamic_and_error_pages_decode_to_what_an_identity_request_gets(
    next_gateway: GatewayProcess, path: str
) -> None:
    status, _, identity = next_gateway.request(path, headers={"Accept-Encoding": "identity"})
    for accept, coding in (("gzip, deflate, br", "br"), ("gzip", "gzip")):
        c_status, headers, body = next_gateway.request(path, headers={"Accept-Encoding": accept})
        assert c_status == status
        assert headers["Content-Encoding"] == coding
        decoded = decode(coding, body)
        if path == "/stream?ms=0":  # rendered per request: compare the stable parts
            assert b'id="shell"' in decoded and b'id="slow"' in decoded
        else:
            assert decoded == identity


def test_next_is_asked_for_identity_bodies(next_gateway: GatewayProcess) -> None:
    status, headers, body = next_gateway.request("/api/echo", headers=BROWSER)
    assert status == 200
    echo = json.loads(decode(headers.get("Content-Encoding"), body))
    assert echo["headers"]["accept-encoding"] == "identity"


def test_each_coding_has_its_own_etag_and_its_304(next_gateway: GatewayProcess) -> None:
    _, identity_headers, _ = next_gateway.request("/about", headers={"Accept-Encoding": "identity"})
    etag = identity_headers["ETag"]
    assert etag.startswith('"')  # Next's strong ETag on a prerendered page
    variants = {}
    for accept, coding in (("br", "br"), ("gzip", "gzip")):
        _, headers, _ = next_gateway.request("/about", headers={"Accept-Encoding": accept})
        assert headers["Content-Encoding"] == coding
        variants[coding] = headers["ETag"]
    assert variants == {"br": etag[:-1] + '-br"', "gzip": etag[:-1] + '-gzip"'}
    for coding, variant in variants.items():
        for sent in (variant, "W/" + variant, f'"unrelated", {variant}'):
            status, headers, body = next_gateway.request(
                "/about", headers={"Accept-Encoding": coding, "If-None-Match": sent}
            )
            assert status == 304 and body == b"", sent
            assert headers["ETag"] == variant
            assert "accept-encoding" in vary_names(headers)
    # The identity tag still revalidates the identity representation.
    status, headers, _ = next_gateway.request(
        "/about", headers={"Accept-Encoding": "identity", "If-None-Match": etag}
    )
    assert status == 304 and headers["ETag"] == etag
    # A tag that is not this page's gets the page.
    status, _, _ = next_gateway.request(
        "/about", headers={"Accept-Encoding": "br", "If-None-Match": '"not-this-page-br"'}
    )
    assert status == 200


def compressed_stats(gw: GatewayProcess) -> dict[str, int]:
    state = gw.ready_state()
    assert state is not None
    return state["compressed"]  # type: ignore[no-any-return]


def test_a_prerendered_page_is_compressed_once_not_per_request(
    next_gateway: GatewayProcess,
) -> None:
    path = f"/about?once={uuid.uuid4().hex}"  # its own cache entry: a query keys it apart
    before = compressed_stats(next_gateway)
    bodies = {next_gateway.request(path, headers=BROWSER)[2] for _ in range(10)}
    after = compressed_stats(next_gateway)
    assert len(bodies) == 1
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 9
    assert after["bytes"] <= after["max_bytes"]


def test_head_and_ranges_are_left_alone(next_gateway: GatewayProcess) -> None:
    _, _, identity = next_gateway.request("/about", headers={"Accept-Encoding": "identity"})
    status, headers, body = next_gateway.request("/about", method="HEAD", headers=BROWSER)
    assert status == 200 and body == b""
    assert "Content-Encoding" not in headers
    assert headers["Content-Length"] == str(len(identity))
    assert "accept-encoding" in vary_names(headers)
    # A range of a static chunk goes to Next (static.py), whose 206 is passed as it is.
    page = next_gateway.request("/")[2].decode()
    chunk = page.split('src="/_next/static/chunks/', 1)[1].split('"', 1)[0]
    status, headers, body = next_gateway.request(
        f"/_next/static/chunks/{chunk}", headers={**BROWSER, "Range": "bytes=0-99"}
    )
    assert status == 206 and len(body) == 100
    assert "Content-Encoding" not in headers


def test_no_transform_streams_of_the_app_are_not_compressed(next_gateway: GatewayProcess) -> None:
    # The app's SSE and ReadableStream routes send Cache-Control: no-transform.
    for path in ("/api/sse?count=2&interval=10", "/api/stream?chunks=2&interval=10"):
        status, headers, body = next_gateway.request(path, headers=BROWSER)
        assert status == 200 and "no-transform" in headers["Cache-Control"]
        assert "Content-Encoding" not in headers
        assert b"0" in body


@pytest.mark.parametrize("accept", ["gzip, deflate, br", "gzip"])
def test_suspense_html_stays_streaming_when_compressed(
    next_gateway: GatewayProcess, accept: str
) -> None:
    started = time.monotonic()
    conn, resp = open_response(
        next_gateway.url("/stream?ms=1500"), headers={"Accept-Encoding": accept}
    )
    try:
        reader = DecodingReader(resp)
        assert reader.coding == ("br" if "br" in accept else "gzip")
        _, shell_at = read_until(reader, b'id="shell"')
        _, slow_at = read_until(reader, b'id="slow"')
    finally:
        conn.close()
    assert shell_at - started < 0.75  # the shell decoded long before the slow part was sent
    assert slow_at - started >= 1.5


def test_rsc_payload_stays_streaming_when_compressed(next_gateway: GatewayProcess) -> None:
    started = time.monotonic()
    conn, resp = open_response(
        next_gateway.url("/stream?ms=1500&_rsc"), headers={"RSC": "1", **BROWSER}
    )
    try:
        assert resp.headers["Content-Type"].startswith("text/x-component")
        reader = DecodingReader(resp)
        assert reader.coding == "br"
        _, first_at = read_until(reader, b"This paragraph is in the first chunk.")
        _, slow_at = read_until(reader, b"Loaded after")
    finally:
        conn.close()
    assert first_at - started < 0.75 and slow_at - started >= 1.5


def test_server_action_form_works_as_browsers_ask(next_gateway: GatewayProcess) -> None:
    page = decode("br", next_gateway.request("/notes", headers=BROWSER)[2])
    action = page.split(b'name="$ACTION_ID_', 1)[1].split(b'"', 1)[0].decode()
    note = f"compressed note {uuid.uuid4().hex[:8]}"
    boundary = uuid.uuid4().hex
    fields = {f"$ACTION_ID_{action}": "", "text": note}
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    )
    status, headers, resp = next_gateway.request(
        "/notes",
        method="POST",
        body=(body + f"--{boundary}--\r\n").encode(),
        headers={
            **BROWSER,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": f"http://127.0.0.1:{next_gateway.port}",
            "Accept": "text/html",
        },
    )
    assert status == 200, resp[:300]
    assert note.encode() in decode(headers.get("Content-Encoding"), resp)


def test_static_files_have_an_etag_and_a_304_per_coding(next_gateway: GatewayProcess) -> None:
    page = next_gateway.request("/")[2].decode()
    chunk = "/_next/static/chunks/" + page.split('src="/_next/static/chunks/', 1)[1].split('"')[0]
    _, identity_headers, identity = next_gateway.request(
        chunk, headers={"Accept-Encoding": "identity"}
    )
    tag = identity_headers["ETag"]
    assert tag.startswith('W/"')  # Next's own, for the identity file
    _, headers, body = next_gateway.request(chunk, headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == identity
    assert headers["ETag"] == tag[:-1] + '-gzip"'
    status, h304, _ = next_gateway.request(
        chunk, headers={"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]}
    )
    assert status == 304 and h304["ETag"] == headers["ETag"]
    # The gzip tag does not revalidate another representation.
    status, _, _ = next_gateway.request(
        chunk, headers={"Accept-Encoding": "identity", "If-None-Match": headers["ETag"]}
    )
    assert status == 200


# -- a stand-in with shaped responses -----------------------------------------------------------


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": [sys.executable, str(SHAPED_CHILD), "--port", "{port}"]},
        "proxy": {"compression": {"cache_bytes": CACHE_BYTES}},
    }
    with GatewayProcess(tmp_path_factory.mktemp("shaped"), config) as gw:
        gw.wait_ready()
        yield gw


def shaped_path(*headers: str, **params: object) -> str:
    query = [f"{k}={quote(str(v))}" for k, v in params.items()]
    query += [f"header={quote(h)}" for h in headers]
    return "/shaped?" + "&".join(query)


def text_body(size: int) -> bytes:
    sys.path.insert(0, str(SHAPED_CHILD.parent))
    try:
        from shaped_child import text_body as make
    finally:
        sys.path.pop(0)
    return make(size)


def test_a_body_next_already_encoded_is_not_encoded_again(shaped: GatewayProcess) -> None:
    status, headers, body = shaped.request(
        shaped_path(size=5000, gzip=1, chunks=3), headers=BROWSER
    )
    assert status == 200
    assert headers.get_all("Content-Encoding") == ["gzip"]
    assert gzip.decompress(body) == text_body(5000)
    assert "accept-encoding" not in vary_names(headers)


@pytest.mark.parametrize(
    "headers",
    [
        ("Cache-Control: public, no-transform",),
        ("Content-Type: image/png",),
        ("Content-Type: font/woff2",),
        ("Content-Type: application/zip",),
    ],
)
def test_no_transform_and_compressed_types_are_sent_as_they_are(
    shaped: GatewayProcess, headers: tuple[str, ...]
) -> None:
    params: dict[str, object] = {"size": 5000}
    if headers[0].startswith("Content-Type"):
        params["type"] = headers[0].split(": ", 1)[1]
        headers = ()
    status, got, body = shaped.request(shaped_path(*headers, **params), headers=BROWSER)
    assert status == 200 and "Content-Encoding" not in got
    assert body == text_body(5000)
    assert "accept-encoding" not in vary_names(got)


def test_small_bodies_are_sent_as_they_are(shaped: GatewayProcess) -> None:
    status, headers, body = shaped.request(shaped_path(size=1023), headers=BROWSER)
    assert status == 200 and "Content-Encoding" not in headers and body == text_body(1023)
    status, headers, body = shaped.request(shaped_path(size=1024), headers=BROWSER)
    assert headers["Content-Encoding"] == "br" and decode("br", body) == text_body(1024)


def test_partial_and_bodiless_answers_are_left_alone(shaped: GatewayProcess) -> None:
    status, headers, body = shaped.request(
        shaped_path("Content-Range: bytes 0-4999/9000", status=206, size=5000), headers=BROWSER
    )
    assert status == 206 and "Content-Encoding" not in headers and body == text_body(5000)
    status, headers, body = shaped.request(shaped_path(status=204), headers=BROWSER)
    assert status == 204 and "Content-Encoding" not in headers and body == b""


def test_a_chunked_body_is_compressed_as_it_streams(shaped: GatewayProcess) -> None:
    status, headers, body = shaped.request(
        shaped_path(size=200_000, chunks=20, interval=5), headers=BROWSER
    )
    assert status == 200 and headers["Content-Encoding"] == "br"
    assert "Content-Length" not in headers  # chunked: the size was not known when it started
    assert decode("br", body) == text_body(200_000)


def test_weak_etags_stay_weak_and_304_translates_back(shaped: GatewayProcess) -> None:
    path = shaped_path(size=5000, etag='W/"w1"')
    _, headers, _ = shaped.request(path, headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and headers["ETag"] == 'W/"w1-gzip"'
    status, headers, _ = shaped.request(
        path, headers={"Accept-Encoding": "gzip", "If-None-Match": 'W/"w1-gzip"'}
    )
    assert status == 304 and headers["ETag"] == 'W/"w1-gzip"'
    assert headers["X-Seen-If-None-Match"] == 'W/"w1-gzip", W/"w1"'
    assert headers["X-Seen-Accept-Encoding"] == "identity"


@pytest.mark.parametrize("accept", ["gzip, deflate, br", "gzip"])
def test_sse_is_compressed_and_every_event_arrives_when_emitted(
    shaped: GatewayProcess, accept: str
) -> None:
    conn, resp = open_response(
        shaped.url(shaped_path(sse=1, chunks=10, interval=100)), headers={"Accept-Encoding": accept}
    )
    delays = []
    try:
        reader = DecodingReader(resp)
        assert reader.coding == ("br" if "br" in accept else "gzip")
        assert resp.headers["Content-Type"] == "text/event-stream"
        data = b""
        for i in range(10):
            data, _ = read_until(reader, f'"i": {i},'.encode())
            received = time.time() * 1000
            event = json.loads(data.rsplit(b"data: ", 1)[-1].split(b"\n")[0])
            delays.append(received - event["t"])
    finally:
        conn.close()
    assert statistics.median(delays) < 30, delays  # ms from the child emitting to us decoding


def test_the_cache_stays_within_its_bound(shaped: GatewayProcess) -> None:
    # Strong ETags on 200 KB pages: each is compressed once and kept until the bound.
    for i in range(40):
        path = shaped_path(size=200_000 + i, etag=f'"page-{i}"')
        status, _, body = shaped.request(path, headers=BROWSER)
        assert status == 200 and decode("br", body) == text_body(200_000 + i)
        stats = compressed_stats(shaped)
        assert stats["max_bytes"] == CACHE_BYTES and stats["bytes"] <= CACHE_BYTES
    assert 0 < stats["entries"] < 40  # some were evicted
    # The newest is still there: asking again is a hit.
    shaped.request(shaped_path(size=200_039, etag='"page-39"'), headers=BROWSER)
    assert compressed_stats(shaped)["hits"] == stats["hits"] + 1
