"""Compression rules without sockets: negotiation, which responses, ETags per coding, the
streaming compressors and the byte-bounded cache (gateway/proxy/compression.py)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import brotli
import pytest
from tornado.httputil import HTTPHeaders

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.proxy.compression import (
    CompressedCache,
    CompressionPolicy,
    cacheable_etag,
    compress_whole,
    merge_vary,
    negotiate,
    not_modified_etag,
    stream_compressor,
    upstream_if_none_match,
    variant_etag,
)

DEFAULTS = GatewayConfig().proxy.compression
POLICY = CompressionPolicy(
    enabled=True,
    gzip_level=DEFAULTS.gzip_level,
    brotli_quality=DEFAULTS.brotli_level,
    min_size=DEFAULTS.min_size,
    types=tuple(DEFAULTS.types),
)


def head(**fields: str) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name, value in fields.items():
        headers.add(name.rstrip("_").replace("_", "-"), value)  # a trailing _: repeated
    return headers


HTML = head(Content_Type="text/html; charset=utf-8")


# -- negotiation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("", None),  # no header: identity
        ("identity", None),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip, deflate, br", "br"),  # what browsers send: brotli preferred
        ("br", "br"),
        ("GZIP, BR", "br"),
        ("deflate", None),  # not offered
        ("br;q=0, gzip", "gzip"),  # q=0 refuses
        ("br;q=0, gzip;q=0", None),
        ("gzip;q=1, br;q=0.5", "gzip"),  # the client's weights first
        ("gzip;q=0.5, br;q=0.5", "br"),  # then ours
        ("*", "br"),
        ("*;q=0.1, gzip", "gzip"),
        ("*;q=0", None),
        ("*, br;q=0", "gzip"),
        ("identity;q=0", None),  # nothing acceptable but identity refused: identity, not 406
        ("gzip, identity;q=0", "gzip"),
        ("identity;q=1, gzip;q=0.5", None),  # would rather have it as it is
        ("gzip;q=bad, br", "br"),  # a malformed weight refuses that coding
        ("gzip;q=2", "gzip"),
        (" , ;q=1, br ; q=0.9 ", "br"),
    ],
)
def test_negotiate_honours_q_values_and_prefers_brotli(accept: str, coding: str | None) -> None:
    assert negotiate(accept) == coding


def test_negotiate_among_what_is_available() -> None:
    assert negotiate("gzip, br", ("gzip",)) == "gzip"
    assert negotiate("br", ("gzip",)) is None


# -- which responses ----------------------------------------------------------------------------


def plan(
    headers: HTTPHeaders = HTML,
    method: str = "GET",
    status: int = 200,
    accept: str = "gzip, deflate, br",
    length: int | None = 10_000,
    policy: CompressionPolicy = POLICY,
) -> tuple[str | None, bool]:
    p = policy.plan(method, status, accept, headers, length)
    return p.coding, p.vary


def test_a_page_is_compressed_for_a_browser_and_varies() -> None:
    assert plan() == ("br", True)
    assert plan(accept="gzip") == ("gzip", True)
    assert plan(accept="identity") == (None, True)  # not compressed, but it would be for others
    assert plan(length=None) == ("br", True)  # a stream of unknown length too


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=utf-8",
        "text/x-component",
        "text/event-stream",
        "text/css",
        "application/json",
        "application/ld+json",
        "application/javascript; charset=UTF-8",
        "image/svg+xml",
        "application/rss+xml",
        "Text/HTML",
    ],
)
def test_text_types_are_compressed(content_type: str) -> None:
    assert plan(head(Content_Type=content_type))[0] == "br"


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png",
        "image/webp",
        "video/mp4",
        "audio/mpeg",
        "font/woff2",
        "font/woff",
        "application/zip",
        "application/gzip",
        "application/octet-stream",
        "",
    ],
)
def test_already_compressed_or_unknown_types_are_left_alone(content_type: str) -> None:
    headers = head(Content_Type=content_type) if content_type else head()
    assert plan(headers) == (None, False)


@pytest.mark.parametrize(
    "headers",
    [
        head(Content_Type="text/html", Cache_Control="no-cache, No-Transform"),
        head(Content_Type="text/html", Cache_Control="public", Cache_Control_="no-transform"),
        head(Content_Type="text/html", Content_Encoding="gzip"),  # never twice
        head(Content_Type="text/html", Content_Encoding="br"),
        head(Content_Type="text/html", Content_Range="bytes 0-9/100"),
    ],
)
def test_no_transform_encoded_and_partial_responses_are_left_alone(headers: HTTPHeaders) -> None:
    assert plan(headers) == (None, False)


def test_a_content_encoding_of_identity_is_no_encoding() -> None:
    assert plan(head(Content_Type="text/html", Content_Encoding="identity"))[0] == "br"


@pytest.mark.parametrize("status", [100, 101, 204, 206, 304])
def test_bodiless_and_partial_statuses_are_left_alone(status: int) -> None:
    assert plan(status=status) == (None, False)


@pytest.mark.parametrize("status", [201, 301, 404, 500])
def test_other_statuses_with_a_body_are_compressed(status: int) -> None:
    assert plan(status=status)[0] == "br"


def test_head_is_not_compressed_but_varies() -> None:
    assert plan(method="HEAD") == (None, True)


def test_small_bodies_are_left_alone() -> None:
    assert plan(length=POLICY.min_size - 1) == (None, False)
    assert plan(length=POLICY.min_size)[0] == "br"
    assert plan(length=0) == (None, False)


def test_disabled_policy_touches_nothing() -> None:
    off = CompressionPolicy(False, 6, 5, 0, ("text/*",))
    assert plan(policy=off) == (None, False)


def test_types_are_patterns() -> None:
    only_json = CompressionPolicy(True, 6, 5, 0, ("application/*+json",))
    assert plan(head(Content_Type="application/ld+json"), policy=only_json)[0] == "br"
    assert plan(head(Content_Type="text/html"), policy=only_json)[0] is None


@pytest.mark.parametrize(
    ("values", "merged"),
    [
        ([], "Accept-Encoding"),
        (["rsc, next-router-state-tree"], "rsc, next-router-state-tree, Accept-Encoding"),
        (["rsc", "Origin"], "rsc, Origin, Accept-Encoding"),
        (["rsc, accept-encoding"], None),  # already there, in any case: never twice
        (["Accept-Encoding"], None),
        (["*"], None),
    ],
)
def test_vary_gets_accept_encoding_once(values: list[str], merged: str | None) -> None:
    assert merge_vary(values) == merged


# -- ETags per coding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "coding", "variant"),
    [
        ('"abc"', "br", '"abc-br"'),
        ('"abc"', "gzip", '"abc-gzip"'),
        ('W/"abc"', "br", 'W/"abc-br"'),  # weak stays weak
        ('""', "gzip", '"-gzip"'),
        ("abc", "br", None),  # malformed: the variant goes without one
        ('W/"', "br", None),
        ('"', "br", None),
    ],
)
def test_variant_etag(etag: str, coding: str, variant: str | None) -> None:
    assert variant_etag(etag, coding) == variant


def test_if_none_match_names_nexts_own_tag_too() -> None:
    assert upstream_if_none_match('"abc-br"') == '"abc-br", "abc"'
    assert upstream_if_none_match('W/"abc-gzip", "x"') == 'W/"abc-gzip", W/"abc", "x"'
    assert upstream_if_none_match('"plain"') == '"plain"'
    assert upstream_if_none_match("*") == "*"


def test_a_304_confirms_the_variant_the_client_named() -> None:
    assert not_modified_etag('"abc"', '"abc-br"') == '"abc-br"'
    assert not_modified_etag('"abc"', 'W/"abc-gzip"') == '"abc-gzip"'
    assert not_modified_etag('"abc"', '"abc"') == '"abc"'
    assert not_modified_etag('"abc"', '"other-br", "abc"') == '"abc"'
    assert not_modified_etag('W/"abc"', '"abc-br"') == 'W/"abc-br"'


def test_only_strong_etags_of_complete_gets_are_cacheable() -> None:
    tagged = head(ETag='"abc"')
    assert cacheable_etag("GET", 200, tagged) == '"abc"'
    assert cacheable_etag("GET", 200, head(ETag='W/"abc"')) is None
    assert cacheable_etag("GET", 200, head()) is None
    assert cacheable_etag("POST", 200, tagged) is None
    assert cacheable_etag("GET", 404, tagged) is None


# -- compressors --------------------------------------------------------------------------------

PIECES = [b"<!doctype html><p>shell</p>" * 20, b"<p>slow part</p>" * 30, b"<p>end</p>"]


def decoder(coding: str):  # type: ignore[no-untyped-def]
    if coding == "br":
        return brotli.Decompressor().process
    return zlib.decompressobj(31).decompress


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_each_streamed_piece_decodes_as_soon_as_it_is_sent(coding: str) -> None:
    compressor, decode = stream_compressor(coding, POLICY), decoder(coding)
    for piece in PIECES:
        assert decode(compressor.compress(piece)) == piece  # flushed: nothing held back
    assert decode(compressor.finish()) == b""


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_a_whole_body_round_trips_and_is_smaller(coding: str) -> None:
    body = b"".join(PIECES) * 10
    packed = compress_whole(coding, body, POLICY)
    assert len(packed) < len(body) / 4
    assert (brotli.decompress(packed) if coding == "br" else gzip.decompress(packed)) == body


# -- the cache ----------------------------------------------------------------------------------


def key(i: int) -> tuple[str, str, str]:
    return (f"/page/{i}", "br", f'"etag-{i}"')


def test_cache_stays_within_its_byte_bound_and_evicts_least_recently_used() -> None:
    cache = CompressedCache(64 * 1024)
    body = b"x" * 4000
    for i in range(100):  # ~400 KB into 64 KiB
        cache.put(key(i), body)
        assert cache.size <= cache.max_bytes
    assert cache.size == sum(cache.cost(k, body) for k in cache.keys())
    kept = len(cache)
    assert 10 <= kept < 100
    assert cache.keys() == [key(i) for i in range(100 - kept, 100)]  # the newest stayed
    # A hit makes an entry the most recently used: it outlives older ones.
    oldest = cache.keys()[0]
    assert cache.get(oldest) == body
    cache.put(key(100), body)
    assert oldest in cache.keys() and key(100 - kept + 1) not in cache.keys()
    assert cache.get(key(0)) is None
    assert cache.hits == 1 and cache.misses == 1


def test_cache_replacing_an_entry_counts_its_bytes_once() -> None:
    cache = CompressedCache(1 << 20)
    cache.put(key(1), b"a" * 1000)
    cache.put(key(1), b"b" * 10)
    assert len(cache) == 1 and cache.size == cache.cost(key(1), b"b" * 10)


def test_cache_refuses_an_entry_larger_than_a_quarter_of_it() -> None:
    cache = CompressedCache(10_000)
    cache.put(key(1), b"a" * 1000)
    cache.put(key(2), b"b" * 3000)
    assert cache.keys() == [key(1)]
    empty = CompressedCache(0)
    empty.put(key(1), b"")
    assert len(empty) == 0 and empty.size == 0


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("gzip_level: 10", r"proxy\.compression\.gzip_level: 10 is out of range"),
        ("brotli_level: -1", r"proxy\.compression\.brotli_level: -1 is out of range"),
        ("min_size: -5", r"proxy\.compression\.min_size: -5 is out of range"),
        ("cache_bytes: lots", r"proxy\.compression\.cache_bytes: expected an integer"),
        ("enabled: maybe", r"proxy\.compression\.enabled: expected true or false"),
        ("types: [text/html, html]", r"proxy\.compression\.types: 'html' is not a media type"),
        ("level: 5", r"unknown key 'proxy\.compression\.level'"),
    ],
)
def test_bad_compression_settings_name_the_key(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"proxy:\n  compression:\n    {yaml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(str(path), environ={})
