"""X-Forwarded-* policy: the gateway's own view, unless the peer is a trusted proxy."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

from gateway.proxy.headers import ForwardingPolicy


def client_headers() -> HTTPHeaders:
    h = HTTPHeaders()
    h.add("Host", "app.example")
    h.add("X-Forwarded-For", "1.1.1.1")
    h.add("X-Forwarded-For", "2.2.2.2")
    h.add("X-Forwarded-Proto", "https")
    h.add("Forwarded", "for=1.1.1.1")
    h.add("X-Real-IP", "1.1.1.1")
    h.add("X-Middleware-Subrequest", "1")
    h.add("Expect", "100-continue")
    h.add("Cookie", "a=1")
    return h


def forwarded(peer: str, headers: HTTPHeaders | None = None) -> HTTPHeaders:
    out = HTTPHeaders()
    for name, value in ForwardingPolicy(["10.0.0.0/8"]).upstream_headers(
        headers or client_headers(), peer, "http", "app.example", 8000
    ):
        out.add(name, value)
    return out


def test_untrusted_peer_gets_its_claims_replaced() -> None:
    out = forwarded("203.0.113.5")
    assert out.get_list("X-Forwarded-For") == ["203.0.113.5"]
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "app.example" and out["X-Forwarded-Port"] == "8000"
    assert "Forwarded" not in out and "X-Real-IP" not in out
    assert "X-Middleware-Subrequest" not in out and "Expect" not in out
    assert out["Host"] == "app.example" and out["Cookie"] == "a=1"


def test_trusted_peer_keeps_its_claims_and_is_appended() -> None:
    out = forwarded("10.1.2.3")
    assert out.get_list("X-Forwarded-For") == ["1.1.1.1, 2.2.2.2, 10.1.2.3"]
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Port"] == "8000"  # not claimed by the proxy: the gateway's view
    assert out["Forwarded"] == "for=1.1.1.1"
    assert "X-Middleware-Subrequest" not in out  # never, not even from a trusted proxy


def test_the_parsed_headers_are_never_modified() -> None:
    # Tornado reads the body by this object: Connection: Content-Length once removed the
    # length from it, and the body was parsed as a second request.
    h = client_headers()
    h.add("Content-Length", "12")
    h.add("Connection", "Content-Length, Expect, Host")
    before = list(h.get_all())
    out = forwarded("203.0.113.5", h)
    assert list(h.get_all()) == before
    assert "Content-Length" not in out  # the proxy frames the body itself
    assert out["Host"] == "app.example"  # Connection may not name protected headers away


def test_trust_matches_ipv4_mapped_ipv6_and_rejects_garbage() -> None:
    policy = ForwardingPolicy(["127.0.0.1"])
    assert policy.is_trusted("::ffff:127.0.0.1")
    assert not policy.is_trusted("not-an-ip")
    assert not ForwardingPolicy().is_trusted("127.0.0.1")


def xff(*values: str, real_ip: str = "") -> HTTPHeaders:
    h = HTTPHeaders()
    for v in values:
        h.add("X-Forwarded-For", v)
    if real_ip:
        h.add("X-Real-IP", real_ip)
    return h


def test_client_ip_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    policy = ForwardingPolicy(["127.0.0.1", "10.0.0.0/8"])
    # Untrusted peers cannot claim another address.
    assert policy.client_ip("203.0.113.5", xff("127.0.0.1")) == "203.0.113.5"
    # Behind trusted proxies: the nearest untrusted hop, not a spoofable leftmost one.
    assert policy.client_ip("127.0.0.1", xff("203.0.113.5")) == "203.0.113.5"
    assert policy.client_ip("127.0.0.1", xff("6.6.6.6, 203.0.113.5", "10.0.0.7")) == ("203.0.113.5")
    assert policy.client_ip("::ffff:127.0.0.1", xff("198.51.100.1")) == "198.51.100.1"
    # Nothing forwarded: X-Real-IP, else the peer (Next.js calling the API directly).
    assert policy.client_ip("127.0.0.1", xff(real_ip="198.51.100.2")) == "198.51.100.2"
    assert policy.client_ip("127.0.0.1", xff()) == "127.0.0.1"
    # Only trusted hops: the leftmost.
    assert policy.client_ip("127.0.0.1", xff("10.0.0.1, 10.0.0.2")) == "10.0.0.1"
    # No trusted proxies configured: always the peer.
    assert ForwardingPolicy().client_ip("127.0.0.1", xff("203.0.113.5")) == "127.0.0.1"
