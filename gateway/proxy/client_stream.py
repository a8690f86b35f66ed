"""The client connection's stream: what the gateway changes in Tornado's IOStream for it.

- TCP_NODELAY stays on (:class:`~gateway.proxy.upstream.NoDelayStream`).
- A request head over the size limit gets 431 before the connection closes, not silence.
- After an early answer (413, or Next answering before the body was read), the connection is
  closed *lingering*, so the answer is not destroyed by a reset.
- A complete response already in memory (a static file) can leave in one ``sendmsg`` with its
  head (:func:`write_whole_response`).
"""

from __future__ import annotations

import asyncio
import re
import socket

from tornado.http1connection import HTTP1Connection
from tornado.iostream import SSLIOStream, StreamClosedError, UnsatisfiableReadError

from gateway.proxy.upstream import NoDelayStream


class ClientStream(NoDelayStream):
    """A client connection's stream that says why it is closed when a head is too large.

    Tornado drops the connection when a request head exceeds ``max_header_size`` (or a chunk
    size line its 64 bytes) without a word; a client then cannot tell a limit from a crash.
    RFC 6585 §5: answer 431 for the head (400 for a chunk line), then close as before.
    """

    def _check_max_bytes(self, delimiter: bytes | re.Pattern[bytes], size: int) -> None:
        try:
            super()._check_max_bytes(delimiter, size)
        except UnsatisfiableReadError:
            # The request head is read with a regex; chunk size lines with a bytes delimiter.
            self._refuse(_HEAD_TOO_LARGE if isinstance(delimiter, re.Pattern) else _BAD_CHUNK)
            raise

    def _refuse(self, answer: bytes) -> None:
        try:
            self.socket.send(answer)  # best effort: the connection is closed right after
        except OSError:
            pass

    linger_on_close = False
    """Set when the gateway answered before it read the whole request: see :meth:`close_fd`."""

    def close_fd(self) -> None:
        """Close, or, after an early answer, close *lingering* (what nginx does): closing a
        socket with unread request bytes makes the kernel send RST, which can destroy the
        answer (a 413) before the client reads it; a client that sends its whole body before
        reading (Python's http.client, many SDKs) then sees "connection reset". Instead the
        write side is shut (the client gets the answer and EOF) and what the client still sends
        is read and dropped, for a bounded time and size, before the socket is closed."""
        sock = self.socket
        if not self.linger_on_close or sock is None:
            super().close_fd()
            return
        self.socket = None  # type: ignore[assignment]
        _Lingerer(sock).start()


class _Lingerer:
    """Reads and drops what a client still sends after the gateway's answer, then closes."""

    MAX_SECONDS = 5.0
    SILENCE = 1.0
    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.read = 0
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + self.MAX_SECONDS
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.loop.add_reader(self.sock.fileno(), self._drain)
        except (OSError, ValueError):
            self.sock.close()
            return
        self._rearm()

    def _rearm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        when = min(self.deadline, self.loop.time() + self.SILENCE)
        self.timer = self.loop.call_at(when, self._close)

    def _drain(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.read += len(data)
        if not data or self.read > self.MAX_BYTES:
            self._close()
            return
        self._rearm()

    def _close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (OSError, ValueError):
            pass
        self.sock.close()


_CLOSE = b"Connection: close\r\n\r\n"
_KEEP = b"\r\n"


def write_whole_response(
    conn: HTTP1Connection, head: bytes, body: bytes
) -> asyncio.Future[None] | None:
    """Write a complete response to an HTTP/1.1 client: ``head`` is its status line and fields,
    each ending in CRLF (with Content-Length, without Connection and the blank line), ``body``
    all of its body. Both leave in one ``sendmsg`` when nothing is queued before them (a 110 KB
    static file is not copied into a head+body buffer), the rest through the stream.

    Returns the write's future (done at once when the socket took everything): call
    ``conn.finish()`` once it is done, as Tornado's own ``write_headers`` path does, so that a
    connection that closes after this response does not drop bytes still queued. Returns None,
    writing nothing, where Tornado must write the head (an HTTP/1.0 client may need
    ``Connection: Keep-Alive``; a TLS stream has no ``sendmsg``).

    This is Tornado's ``HTTP1Connection.write_headers`` minus its per-response work (building
    the head from ``HTTPHeaders``, a regex per line, copying the body after the head), measured
    as a quarter of the gateway's CPU per static response. It reads two attributes of Tornado's
    connection: the request's version and whether the connection closes after this response
    (``_disconnect_on_finish``: the client asked, or the gateway is draining).
    """
    start_line = conn._request_start_line
    stream = conn.stream
    if start_line is None or start_line.version != "HTTP/1.1" or isinstance(stream, SSLIOStream):
        return None
    if stream.closed():
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(StreamClosedError())
        return failed
    head += _CLOSE if conn._disconnect_on_finish else _KEEP
    sent = 0
    if not stream.writing():
        try:
            sent = stream.socket.sendmsg([head, body])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the stream's own write meets the error again and closes
    if sent == len(head) + len(body):
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    if sent < len(head):
        stream.write(memoryview(head)[sent:])
        return stream.write(body)
    return stream.write(memoryview(body)[sent - len(head) :])


def _plain_answer(status: str, text: str) -> bytes:
    body = f'{{"error":"{text}"}}'.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        "\r\nConnection: close\r\n\r\n"
    ).encode() + body


_HEAD_TOO_LARGE = _plain_answer("431 Request Header Fields Too Large", "headers_too_large")
_BAD_CHUNK = _plain_answer("400 Bad Request", "bad_chunk_size")
