"""Header rules for the reverse proxy (RFC 9110 §7.6.1, RFC 9112 §9.6)."""

from __future__ import annotations

from collections.abc import Iterable

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from gateway.netpolicy import TrustedProxies

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

_XFF = frozenset({"x-forwarded-for"})

# The request's framing: the gateway frames the body to Next itself (framing.py).
FRAMING = frozenset({"content-length", "transfer-encoding"})

# A client's Connection header may not name these away: hop-by-hop abuse (``Connection:
# Host``) would otherwise strip what Next needs to route or authenticate the request.
PROTECTED = frozenset({"host", "cookie", "authorization", "content-type"})


def _connection_tokens(values: list[str]) -> set[str]:
    return {
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    }


def _hop_by_hop_names(headers: HTTPHeaders) -> frozenset[str] | set[str]:
    named = headers.get_list("Connection")
    return _connection_tokens(named) | HOP_BY_HOP if named else HOP_BY_HOP


def end_to_end(headers: HTTPHeaders) -> list[tuple[str, str]]:
    """The headers that may be forwarded: hop-by-hop ones and those named in Connection removed.

    Repeated headers (several Set-Cookie) stay separate and in order.
    """
    drop = _hop_by_hop_names(headers)
    return [(name, value) for name, value in headers.get_all() if name.lower() not in drop]


def strip_hop_by_hop(headers: HTTPHeaders) -> HTTPHeaders:
    """:func:`end_to_end` in place, for the hot path: returns ``headers`` itself.

    Deleting the few hop-by-hop names costs less than copying every other header, and looking
    each of the response's own names up in the set less than asking for every hop-by-hop name.
    """
    drop = _hop_by_hop_names(headers)
    for name in [name for name in headers if name.lower() in drop]:
        del headers[name]
    return headers


class ForwardingPolicy(TrustedProxies):
    """Builds the request headers Next.js sees, with ``X-Forwarded-*`` from the gateway's view.

    From an untrusted peer, every forwarding header the client sent is dropped and replaced:
    a browser cannot make Next believe it is another IP, scheme or host. From a peer listed in
    ``trusted_proxies`` (nginx, a load balancer) they are kept, and the peer is appended to
    ``X-Forwarded-For``.
    """

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        super().__init__(trusted_proxies)
        self._removed: dict[tuple[bool, frozenset[str]], frozenset[str]] = {}
        self._port_texts: dict[int, str] = {}

    def _port_text(self, port: int) -> str:
        text = self._port_texts.get(port)
        if text is None:
            text = self._port_texts[port] = str(port)
        return text

    def upstream_headers(
        self,
        headers: HTTPHeaders,
        peer: str,
        scheme: str,
        host: str,
        port: int,
        drop: frozenset[str] = frozenset(),
    ) -> list[tuple[str, str]]:
        """The request headers for Next, as a new list; ``headers`` is never modified.

        Tornado reads the request body by the very object it parsed (``Content-Length``,
        ``Transfer-Encoding``, ``Expect``): rewriting it in place once let ``Connection:
        Content-Length`` turn a body into a second, unseen request. Hop-by-hop headers, those
        the client's Connection names (except :data:`PROTECTED`), the framing headers and
        ``drop`` are left out; the caller adds its own framing.
        """
        trusted = self.is_trusted(peer)
        removed = self._removed.get((trusted, drop))
        if removed is None:  # once per (trusted, drop): a handful of sets in a process
            removed = (HOP_BY_HOP - PROTECTED) | NEVER_FORWARD | FRAMING | _XFF | drop
            if not trusted:
                removed |= FORWARDING
            self._removed[(trusted, drop)] = removed
        named = headers.get_list("Connection")
        if named:  # names beyond the usual keep-alive/close cost a set of their own
            extra = _connection_tokens(named) - removed - PROTECTED
            if extra:
                removed = removed | extra
        out = [(name, value) for name, value in headers.get_all() if name.lower() not in removed]
        if not trusted:  # the usual case: every X-Forwarded-* is the gateway's own
            out.append(("X-Forwarded-For", peer))
            out.append(("X-Forwarded-Proto", scheme))
            out.append(("X-Forwarded-Host", host))
            out.append(("X-Forwarded-Port", self._port_text(port)))
            return out
        prior = ", ".join(headers.get_list("X-Forwarded-For"))
        out.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
        claimed = {name.lower() for name, _ in out}
        if "x-forwarded-proto" not in claimed:
            out.append(("X-Forwarded-Proto", scheme))
        if "x-forwarded-host" not in claimed:
            out.append(("X-Forwarded-Host", host))
        if "x-forwarded-port" not in claimed:
            out.append(("X-Forwarded-Port", str(port)))
        return out


def local_port(request: HTTPServerRequest) -> int:
    """The gateway port this request arrived on (for ``X-Forwarded-Port``)."""
    stream = getattr(request.connection, "stream", None)
    try:
        return int(stream.socket.getsockname()[1])  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return 443 if request.protocol == "https" else 80
