"""Hop-by-hop header removal (RFC 9110 §7.6.1)."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

from gateway.proxy.headers import end_to_end


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
