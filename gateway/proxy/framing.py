"""How long a client's request body is, decided once, before anything goes to Next.js.

A proxy and the server behind it must agree on where a request ends, or the bytes of one
request become the start of the next (request smuggling). The gateway never forwards the
client's framing headers: it decides the body's framing here, from the parsed head, and frames
the body to Next itself (one ``Content-Length``, or ``Transfer-Encoding: chunked``). What this
module accepts is exactly what Tornado's HTTP/1 reader then reads as the body (a fixed length,
or chunked), and it refuses, with the RFC's status, everything Tornado would refuse later or
where the two could disagree:

- RFC 9112 §6.1: ``Transfer-Encoding`` with ``Content-Length`` -> 400; in an HTTP/1.0 request
  -> 400; ``chunked`` not the final coding, or applied twice -> 400; any other coding (``gzip``,
  ``identity``, ``xchunked``...) -> 501. Coding names are case-insensitive (``CHUNKED`` is
  chunked), as the RFC says and as Tornado reads them.
- RFC 9112 §6.3: several ``Content-Length`` values (repeated headers or a list) are accepted
  only when identical, and forwarded as one; anything but digits -> 400.
- RFC 9112 §3.2: only origin-form targets (``/path?query``) go to Next; absolute-form
  (``http://host/x``), authority-form and asterisk-form -> 400, so a request cannot reach Next
  by a path the gateway's routes never saw.

Nothing here does I/O; it is tested with header objects alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from tornado.httputil import HTTPHeaders

# Longer than any body the gateway would accept, short enough to never build a huge int.
_MAX_LENGTH_DIGITS = 18


class FramingRefused(Exception):
    """The request cannot be forwarded safely; answer ``status`` and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BodyFraming:
    """The request body as the gateway will read and forward it."""

    chunked: bool = False
    length: int = 0
    """The declared length (0 when chunked or absent)."""

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


NO_BODY = BodyFraming()
CHUNKED = BodyFraming(chunked=True)


def check_target(target: str) -> None:
    """Refuse anything but origin-form (RFC 9112 §3.2.1)."""
    if not target.startswith("/"):
        raise FramingRefused(400, "Only origin-form request targets (/path) are accepted.")


def request_framing(version: str, headers: HTTPHeaders) -> BodyFraming:
    """The body's framing from the request head; raises :class:`FramingRefused`."""
    te_values = headers.get_list("Transfer-Encoding")
    cl_values = headers.get_list("Content-Length")
    if te_values:
        if cl_values:
            raise FramingRefused(400, "Transfer-Encoding and Content-Length together.")
        if version == "HTTP/1.0":
            raise FramingRefused(400, "Transfer-Encoding in an HTTP/1.0 request.")
        codings = [c.strip().lower() for value in te_values for c in value.split(",")]
        if codings == ["chunked"]:
            return CHUNKED
        well_formed = codings[-1] == "chunked" and codings.count("chunked") == 1
        if not well_formed and ("chunked" in codings or "" in codings):
            # chunked not last, applied twice, or an empty list element: the length cannot be
            # determined reliably, whatever the other codings are (RFC 9112 §6.3 item 4).
            raise FramingRefused(400, "chunked must be the one, final transfer coding.")
        if "" in codings:
            raise FramingRefused(400, "Empty transfer coding.")
        raise FramingRefused(501, "Only the chunked transfer coding is supported.")
    if cl_values:
        lengths = {p.strip() for value in cl_values for p in value.split(",")}
        if len(lengths) != 1:
            raise FramingRefused(400, "Conflicting Content-Length values.")
        text = lengths.pop()
        if not text.isascii() or not text.isdigit() or len(text) > _MAX_LENGTH_DIGITS:
            raise FramingRefused(400, "Content-Length must be a number.")
        length = int(text)
        return BodyFraming(length=length) if length else NO_BODY
    return NO_BODY


def align_reader(headers: HTTPHeaders, framing: BodyFraming | None) -> None:
    """Make Tornado's body reader read exactly ``framing`` (None: refused, read no body).

    This is the one place the gateway writes to the header object Tornado's connection reads
    the body by, and it does so to make the two decisions identical: one canonical
    ``Content-Length`` or ``Transfer-Encoding: chunked``, or, for a refused request, neither
    (the connection is closed after the answer, so what the client still sends is never read
    as a request). Everything forwarded to Next is built from a copy (headers.py).
    """
    te, cl = headers.get_list("Transfer-Encoding"), headers.get_list("Content-Length")
    if framing is not None:  # the common cases are already canonical: nothing to write
        if framing.chunked and te == ["chunked"] and not cl:
            return
        if not te and framing.length and cl == [str(framing.length)]:
            return
        if not te and not framing.has_body and cl in ([], ["0"]):
            return
    for name in ("Content-Length", "Transfer-Encoding"):
        if name in headers:
            del headers[name]
    if framing is None or not framing.has_body:
        return
    if framing.chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(framing.length)
