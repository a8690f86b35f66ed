"""Header rules for the reverse proxy (RFC 9110 §7.6.1, RFC 9112 §9.6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tornado.httputil import HTTPHeaders, HTTPServerRequest

# RFC 9110 §7.6.1: hop-by-hop fields never cross a proxy, plus every field the message's own
# Connection header names. Proxy-Connection and Keep-Alive are the historical spellings.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Client headers that describe the path to the gateway: believed from trusted proxies only.
FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
    }
)

# Never forwarded: CVE-2025-29927 (this internal header makes Next.js skip middleware), and
# Expect, which Tornado has already answered with 100 Continue before reading the body.
NEVER_FORWARD = frozenset({"x-middleware-subrequest", "expect"})


def _hop_by_hop_names(headers: HTTPHeaders) -> set[str]:
    named = {
        token.strip().lower()
        for value in headers.get_list("Connection")
        for token in value.split(",")
        if token.strip()
    }
    return named | HOP_BY_HOP


def end_to_end(headers: HTTPHeaders) -> list[tuple[str, str]]:
    """The headers that may be forwarded: hop-by-hop ones and those named in Connection removed.

    Repeated headers (several Set-Cookie) stay separate and in order.
    """
    drop = _hop_by_hop_names(headers)
    return [(name, value) for name, value in headers.get_all() if name.lower() not in drop]


def strip_hop_by_hop(headers: HTTPHeaders) -> HTTPHeaders:
    """:func:`end_to_end` in place, for the hot path: returns ``headers`` itself.

    Deleting the few hop-by-hop names costs less than copying every other header.
    """
    for name in _hop_by_hop_names(headers):
        if name in headers:
            del headers[name]
    return headers


class ForwardingPolicy:
    """Builds the request headers Next.js sees, with ``X-Forwarded-*`` from the gateway's view.

    From an untrusted peer, every forwarding header the client sent is dropped and replaced:
    a browser cannot make Next believe it is another IP, scheme or host. From a peer listed in
    ``trusted_proxies`` (nginx, a load balancer) they are kept, and the peer is appended to
    ``X-Forwarded-For``.
    """

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def is_trusted(self, peer: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def upstream_headers(
        self,
        headers: HTTPHeaders,
        peer: str,
        scheme: str,
        host: str,
        port: int,
        drop: frozenset[str] = frozenset(),
    ) -> HTTPHeaders:
        """Rewrite ``headers`` **in place** for the request to Next, and return them.

        ``drop`` names extra headers to leave out. Pass a copy to keep the original.
        """
        trusted = self.is_trusted(peer)
        prior = ", ".join(headers.get_list("X-Forwarded-For")) if trusted else ""
        strip_hop_by_hop(headers)
        removed = NEVER_FORWARD | drop if trusted else NEVER_FORWARD | drop | FORWARDING
        for name in removed:
            if name in headers:
                del headers[name]
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        if "X-Forwarded-Proto" not in headers:
            headers["X-Forwarded-Proto"] = scheme
        if "X-Forwarded-Host" not in headers:
            headers["X-Forwarded-Host"] = host
        if "X-Forwarded-Port" not in headers:
            headers["X-Forwarded-Port"] = str(port)
        return headers


def local_port(request: HTTPServerRequest) -> int:
    """The gateway port this request arrived on (for ``X-Forwarded-Port``)."""
    stream = getattr(request.connection, "stream", None)
    try:
        return int(stream.socket.getsockname()[1])  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return 443 if request.protocol == "https" else 80
