"""Hop-by-hop header removal (RFC 9110 §7.6.1)."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

from gateway.proxy.headers import ForwardingPolicy, end_to_end, strip_hop_by_hop

ACCEPT_ENCODING = frozenset({"accept-encoding"})


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    h = HTTPHeaders()
    h.add("Connection", "keep-alive, X-Secret-Hop")
    h.add("Connection", "Another")
    h.add("Keep-Alive", "timeout=5")
    h.add("Transfer-Encoding", "chunked")
    h.add("Upgrade", "websocket")
    h.add("X-Secret-Hop", "1")
    h.add("Another", "2")
    h.add("Content-Type", "text/html")
    assert end_to_end(h) == [("Content-Type", "text/html")]


def test_repeated_headers_survive_in_order() -> None:
    h = HTTPHeaders()
    h.add("Set-Cookie", "a=1")
    h.add("Set-Cookie", "b=2")
    h.add("Content-Encoding", "gzip")
    assert end_to_end(h) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Encoding", "gzip"),
    ]


def test_strip_in_place_drops_the_same_headers_as_end_to_end() -> None:
    h = HTTPHeaders()
    h.add("Connection", "keep-alive, X-Secret-Hop")
    h.add("Keep-Alive", "timeout=5")
    h.add("x-secret-hop", "1")
    h.add("Set-Cookie", "a=1")
    h.add("Set-Cookie", "b=2")
    h.add("Content-Type", "text/html")
    expected = end_to_end(h)
    assert list(strip_hop_by_hop(h).get_all()) == expected
    assert expected == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/html")]


def test_upstream_headers_per_call_drop_and_connection_names_do_not_stick() -> None:
    policy = ForwardingPolicy()
    h = HTTPHeaders()
    h.add("Host", "example.com")
    h.add("Accept-Encoding", "br")
    h.add("X-Custom", "1")
    h.add("X-Forwarded-For", "6.6.6.6")
    dropped = policy.upstream_headers(h, "10.0.0.1", "http", "example.com", 80, ACCEPT_ENCODING)
    assert ("Accept-Encoding", "br") not in dropped
    named = HTTPHeaders(h)
    named.add("Connection", "X-Custom")
    assert ("X-Custom", "1") not in policy.upstream_headers(named, "10.0.0.1", "http", "h", 80)
    # The same policy afterwards, with neither: both headers go through again.
    assert policy.upstream_headers(h, "10.0.0.1", "http", "example.com", 80) == [
        ("Host", "example.com"),
        ("Accept-Encoding", "br"),
        ("X-Custom", "1"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "example.com"),
        ("X-Forwarded-Port", "80"),
    ]
