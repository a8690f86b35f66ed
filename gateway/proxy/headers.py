"""Header rules for the reverse proxy (RFC 9110 §7.6.1, RFC 9112 §9.6)."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

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


def end_to_end(headers: HTTPHeaders) -> list[tuple[str, str]]:
    """The headers that may be forwarded: hop-by-hop ones and those named in Connection removed.

    Repeated headers (several Set-Cookie) stay separate and in order.
    """
    named = {
        token.strip().lower()
        for value in headers.get_list("Connection")
        for token in value.split(",")
        if token.strip()
    }
    return [
        (name, value)
        for name, value in headers.get_all()
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]
