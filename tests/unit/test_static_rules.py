"""Pure rules of the static fast path: content negotiation, validators, path safety."""

from __future__ import annotations

import pytest

from gateway.proxy.compression import parse_accept_encoding
from gateway.proxy.static import (
    Asset,
    Representation,
    byte_range,
    choose,
    etag_matches,
    unsafe_path,
)

ASSET = Asset(
    content_type="application/javascript; charset=UTF-8",
    last_modified="Sat, 28 Nov 2026 02:21:50 GMT",
    identity=Representation(b"x" * 100, 'W/"64-1"', None),
    gzip=Representation(b"g", 'W/"64-1"', "gzip"),
    br=Representation(b"b", 'W/"64-1"', "br"),
)


def test_parse_accept_encoding_with_weights() -> None:
    assert parse_accept_encoding("gzip;q=0.5, br , *;q=0, deflate;q=bad") == {
        "gzip": 0.5,
        "br": 1.0,
        "*": 0.0,
        "deflate": 0.0,
    }


@pytest.mark.parametrize(
    ("header", "encoding"),
    [
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip, deflate, br", "br"),
        ("br;q=0, gzip", "gzip"),
        ("*", "br"),
        ("*;q=0, identity", None),
        ("GZIP", "gzip"),
    ],
)
def test_choose_prefers_brotli_then_gzip_then_identity(header: str, encoding: str | None) -> None:
    assert choose(ASSET, header).encoding == encoding


def test_choose_without_precompressed_forms() -> None:
    plain = Asset("image/png", ASSET.last_modified, ASSET.identity)
    assert choose(plain, "gzip, br").encoding is None


@pytest.mark.parametrize(
    ("header", "matches"),
    [('W/"64-1"', True), ('"64-1"', True), ('"a", W/"64-1"', True), ('"64-2"', False), ("*", True)],
)
def test_etag_weak_comparison(header: str, matches: bool) -> None:
    assert etag_matches(header, ['W/"64-1"']) is matches


@pytest.mark.parametrize(
    ("path", "unsafe"),
    [
        ("/_next/static/chunks/a.js", False),
        ("/_next/static/../x", True),
        ("/_next/static/chunks/../../x", True),
        ("/_next/static/./a.js", True),
        ("/_next/static//etc/passwd", True),
        ("/_next/static/a\\..\\b", True),
        ("/_next/static/a\x00.js", True),
        ("/_next/static/chunks/", True),
    ],
)
def test_unsafe_paths(path: str, unsafe: bool) -> None:
    assert unsafe_path(path) is unsafe


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=95-200", (95, 99)),
        ("bytes = 5 - 6", (5, 6)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file (RFC 9110 §14.2 allows it)
        ("items=0-1", None),
        ("bytes=9-1", None),
        ("bytes=a-b", None),
        ("bytes=-", None),
    ],
)
def test_one_byte_range_or_the_whole_file(header: str, span: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=-0"])
def test_a_range_with_no_byte_in_the_file_is_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError):
        byte_range(header, 100)
