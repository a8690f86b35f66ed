"""The sans-I/O HTTP/1.1 response parser: bytes in, head/body/end events out."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from gateway.proxy.http11 import ProtocolError, ResponseParser, request_head


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_head(self, code: int, reason: str, headers: HTTPHeaders, keep_alive: bool) -> None:
        self.events.append(("head", (code, reason, list(headers.get_all()), keep_alive)))

    def on_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_end(self) -> None:
        self.events.append(("end", None))

    def body(self) -> bytes:
        return b"".join(d for kind, d in self.events if kind == "body")  # type: ignore[misc]


def parse(
    data: bytes, method: str = "GET", step: int | None = None
) -> tuple[Recorder, ResponseParser, bytes]:
    rec = Recorder()
    parser = ResponseParser(rec, method)
    rest = b""
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        rest += parser.feed(piece)
    return rec, parser, rest


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_chunked_body_is_decoded_whatever_the_read_sizes(step: int | None) -> None:
    rec, parser, rest = parse(CHUNKED, step=step)
    assert parser.complete and rest == b""
    code, reason, headers, keep_alive = rec.events[0][1]  # type: ignore[misc]
    assert (code, reason, keep_alive) == (200, "OK", True)
    assert ("Set-Cookie", "a=1") in headers and ("Set-Cookie", "b=2") in headers
    assert rec.body() == b"hello, world"
    assert rec.events[-1] == ("end", None)


def test_content_length_body_and_what_follows_it() -> None:
    rec, parser, rest = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA")
    assert rec.body() == b"abc" and parser.complete and rest == b"EXTRA"


def test_fast_path_delivers_socket_reads_as_they_come() -> None:
    rec = Recorder()
    parser = ResponseParser(rec, "GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    parser.feed(b"01234")
    parser.feed(b"56789")
    assert [d for k, d in rec.events if k == "body"] == [b"01234", b"56789"]
    assert parser.complete


@pytest.mark.parametrize(
    ("head", "method"),
    [
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: x\r\n\r\n", "GET"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"),
    ],
)
def test_responses_without_a_body(head: bytes, method: str) -> None:
    rec, parser, rest = parse(head, method)
    assert parser.complete and rec.body() == b"" and rest == b""


def test_interim_responses_are_skipped() -> None:
    rec, _, _ = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    assert rec.events[0][1][0] == 201 and rec.body() == b"ok"  # type: ignore[index]


def test_body_until_close_ends_at_eof_and_is_not_keep_alive() -> None:
    rec, parser, _ = parse(b"HTTP/1.1 200 OK\r\n\r\npart1")
    parser.feed(b"part2")
    assert not parser.complete and parser.reads_until_close
    parser.eof()
    assert parser.complete and rec.body() == b"part1part2"
    assert rec.events[0][1][3] is False  # type: ignore[index]


def test_connection_close_and_http10_are_not_keep_alive() -> None:
    rec, _, _ = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert rec.events[0][1][3] is False  # type: ignore[index]
    rec, _, _ = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert rec.events[0][1][3] is False  # type: ignore[index]


def test_eof_in_the_middle_is_an_error() -> None:
    _, parser, _ = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError):
        parser.eof()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX",
    ],
)
def test_malformed_responses_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_oversized_head_is_refused() -> None:
    with pytest.raises(ProtocolError, match="too large"):
        parse(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 300_000)


def test_request_head_keeps_repeated_headers() -> None:
    h = HTTPHeaders()
    h.add("Host", "x")
    h.add("Cookie", "a=1")
    h.add("Cookie", "b=2")
    assert (
        request_head("GET", "/p?q=1", h)
        == b"GET /p?q=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
    )


HEAD_WITH_REPEATS = (
    b"HTTP/1.1 200 OK\r\nVary: rsc, Accept-Encoding\r\nx-nextjs-prerender: 1\r\n"
    b'Set-Cookie: a=1\r\nx-nextjs-prerender: 1\r\nSet-Cookie: b=2\r\nETag:  "e" \t\r\n'
    b"X-Empty:\r\nContent-Length: 5\r\n\r\nhello"
)


@pytest.mark.parametrize("step", [None, 1, 2, 17, 100])
def test_head_fields_are_kept_in_order_whatever_the_read_sizes(step: int | None) -> None:
    rec, parser, rest = parse(HEAD_WITH_REPEATS, step=step)
    assert rec.events[0] == (
        "head",
        (
            200,
            "OK",
            [
                ("Vary", "rsc, Accept-Encoding"),
                ("X-Nextjs-Prerender", "1"),
                ("X-Nextjs-Prerender", "1"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Etag", '"e"'),
                ("X-Empty", ""),
                ("Content-Length", "5"),
            ],
            True,
        ),
    )
    assert rec.body() == b"hello" and parser.complete and rest == b""


def test_a_head_read_alone_is_reported_without_an_empty_body_piece() -> None:
    head, _, body = HEAD_WITH_REPEATS.partition(b"\r\n\r\n")
    rec = Recorder()
    parser = ResponseParser(rec, "GET")
    parser.feed(head + b"\r\n\r\n")
    assert [kind for kind, _ in rec.events] == ["head"]
    parser.feed(body)
    assert [kind for kind, _ in rec.events] == ["head", "body", "end"]


@pytest.mark.parametrize(
    "line",
    [b"X: a\x01b", b"X: a\x7fb", b"X: a\nb", b"X: a\rb", b"X\x00: a", b"X : a", b": a"],
)
def test_control_characters_and_bad_names_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad header line"):
        parse(b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n")
