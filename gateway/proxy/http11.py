"""A sans-I/O parser for HTTP/1.1 responses from Next.js (RFC 9112).

Feed it bytes with :meth:`ResponseParser.feed`; it calls the sink's ``on_head``, ``on_body`` and
``on_end`` as the message is understood. It knows framing (Content-Length, chunked, until close,
no body for HEAD/204/304) and nothing about sockets, so it is tested with bytes alone.

Why not Tornado's HTTP1Connection: it does three IOStream reads per chunk, each with its own
future and event-loop registration; parsing whatever bytes arrived in one pass cost the proxy
a fraction of that (docs/benchmarks.md).
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Protocol

from tornado.httputil import HTTPHeaders

MAX_HEAD = 256 * 1024
MAX_CHUNK_LINE = 4096
_STATUS = re.compile(r"HTTP/1\.([01]) (\d{3})(?: ([^\r\n]*))?\r\n")
# RFC 9112 §5: a field line is a token, a colon, optional whitespace, a value of visible
# characters, spaces, tabs and obs-text, optional whitespace. The whole block is checked by one
# fullmatch and split by one findall (both in C): building the headers with Tornado's
# HTTPHeaders.add, which re-validates each value with a per-character regex, was ~2 µs per
# field, half the cost of parsing a prerendered page's response.
_FIELD_LINE = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*\r\n"
_FIELDS = re.compile(f"(?:{_FIELD_LINE})*")
_FIELD = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r\n")

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ProtocolError(Exception):
    """The response is not valid HTTP/1.1; the connection must be dropped."""


class ResponseSink(Protocol):
    def on_head(self, code: int, reason: str, headers: HTTPHeaders, keep_alive: bool) -> None:
        """The status line and headers (hop-by-hop ones included); ``keep_alive`` tells whether
        the connection can carry another request once this response is complete."""

    def on_body(self, data: bytes) -> None:
        """A piece of the decoded body (chunked framing removed)."""

    def on_end(self) -> None:
        """The response is complete."""


class ResponseParser:
    """Parses one response; call :meth:`reset` before the next one on the same connection."""

    def __init__(self, sink: ResponseSink, method: str) -> None:
        self.sink = sink
        self.method = method
        self.state = _HEAD
        self._buffer = bytearray()
        self._remaining = 0
        self.started = False
        """True once any byte of the response has arrived (a retry is no longer safe)."""

    @property
    def complete(self) -> bool:
        return self.state == _DONE

    @property
    def reads_until_close(self) -> bool:
        return self.state == _UNTIL_CLOSE

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; returns bytes beyond the end of the response (a protocol error for
        a keep-alive connection, which the caller decides about)."""
        if data:
            self.started = True
        if self.state == _HEAD and not self._buffer:
            # Fast path: a whole head in this read (the usual case) is parsed where it lies,
            # and the body after it is not copied through the buffer.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._head(data[: end + 2].decode("latin-1"))
                data = data[end + 4 :]
        if self.state == _LENGTH and not self._buffer and len(data) <= self._remaining:
            # Fast path: a body of known length arriving straight from the socket.
            if data:  # never an empty piece: a head read alone stays alone (handler.flush)
                self._remaining -= len(data)
                self.sink.on_body(data)
                if self._remaining == 0:
                    self._finish()
            return b""
        self._buffer += data
        while True:
            state = self.state
            if state == _HEAD:
                if not self._parse_head():
                    return b""
            elif state == _LENGTH:
                if not self._buffer:
                    return b""
                if self._emit_counted() == 0:
                    self._finish()
            elif state == _CHUNK_SIZE:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_CHUNK_LINE:
                        raise ProtocolError("chunk size line too long")
                    return b""
                size_text = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
                del self._buffer[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text!r}") from None
                if size_text.startswith((b"-", b"+", b"0x", b"0X")):
                    raise ProtocolError(f"bad chunk size {size_text!r}")
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self._remaining = size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not self._buffer:
                    return b""
                if self._emit_counted() == 0:
                    self.state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(self._buffer) < 2:
                    return b""
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del self._buffer[:2]
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise ProtocolError("trailers too long")
                    return b""
                del self._buffer[: end + 2]
                if end == 0:  # trailer fields are dropped: they are rare and hop-by-hop here
                    self._finish()
            elif state == _UNTIL_CLOSE:
                if self._buffer:
                    chunk = bytes(self._buffer)
                    self._buffer.clear()
                    self.sink.on_body(chunk)
                return b""
            else:  # _DONE
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest

    def _emit_counted(self) -> int:
        """Pass on buffered body bytes, up to what the framing announced; returns what is left."""
        take = min(self._remaining, len(self._buffer))
        chunk = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._remaining -= take
        self.sink.on_body(chunk)
        return self._remaining

    def eof(self) -> None:
        """The connection closed: completes a body read until close, else it is an error."""
        if self.state == _UNTIL_CLOSE:
            self._finish()
        elif self.state != _DONE:
            raise ProtocolError("connection closed before the response was complete")

    def _finish(self) -> None:
        self.state = _DONE
        self.sink.on_end()

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ProtocolError("response head too large")
            return False
        head = self._buffer[: end + 2].decode("latin-1")
        del self._buffer[: end + 4]
        self._head(head)
        return True

    def _head(self, head: str) -> None:
        """Act on a response head: its lines, each with its CRLF, without the blank line."""
        m = _STATUS.match(head)
        if m is None:
            raise ProtocolError(f"bad status line {head.partition(chr(13))[0][:100]!r}")
        minor, code = m.group(1), int(m.group(2))
        headers = parse_fields(head, m.end())
        if 100 <= code < 200:
            return  # 100 Continue, 103 Early Hints: not relayed; the real head follows
        reason = m.group(3) or ""
        # get_list, not get: HTTPHeaders.get of a missing name raises and catches a KeyError.
        connection = ",".join(headers.get_list("Connection")).lower()
        keep_alive = minor == "1" and "close" not in connection
        if self.method == "HEAD" or code in (204, 304):
            self.sink.on_head(code, reason, headers, keep_alive)
            self._finish()
            return
        transfer = headers.get_list("Transfer-Encoding")
        length = headers.get_list("Content-Length")
        if transfer:
            if length:
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            if ",".join(transfer).lower().replace(" ", "").endswith("chunked"):
                self.state = _CHUNK_SIZE
            else:
                self.state = _UNTIL_CLOSE
                keep_alive = False
        elif length:
            values = {v.strip() for v in ",".join(length).split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError(f"bad Content-Length {','.join(length)!r}")
            self._remaining = int(values.pop())
            self.state = _LENGTH
        else:
            self.state = _UNTIL_CLOSE
            keep_alive = False
        self.sink.on_head(code, reason, headers, keep_alive)
        if self.state == _LENGTH and self._remaining == 0:
            self._finish()


def parse_fields(head: str, start: int) -> HTTPHeaders:
    """The field lines of ``head`` from ``start`` (each ending in CRLF) as headers, repeated
    names kept in order; ProtocolError names the first bad line."""
    if _FIELDS.fullmatch(head, start) is None:
        for line in head[start:].split("\r\n"):
            if line and _FIELD.fullmatch(line + "\r\n") is None:
                raise ProtocolError(f"bad header line {line[:100]!r}")
        raise ProtocolError("bad header block")  # not reached: some line failed above
    headers = HTTPHeaders()
    seen: set[str] = set()
    for name, value in _FIELD.findall(head, start):
        key = name.lower()
        if key in seen:
            headers.add(name, value.rstrip(" \t"))  # rare (Set-Cookie): validated twice
        else:
            seen.add(key)
            headers[name] = value.rstrip(" \t")
    return headers


def request_head(method: str, target: str, headers: HTTPHeaders | list[tuple[str, str]]) -> bytes:
    """The bytes of a request head. Header values come from Tornado's parser (which refuses
    CR, LF and NUL) or from the gateway itself."""
    pairs = headers.get_all() if isinstance(headers, HTTPHeaders) else headers
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in pairs)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_date_second = -1
_date_field = b""


def date_field() -> bytes:
    """``Date: <now>\\r\\n`` (RFC 9110 §6.6.1), formatted once per second, not per response."""
    global _date_second, _date_field
    now = int(time.time())
    if now != _date_second:
        date = email.utils.formatdate(now, usegmt=True)
        _date_second, _date_field = now, f"Date: {date}\r\n".encode()
    return _date_field
