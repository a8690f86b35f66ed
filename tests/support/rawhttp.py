"""Raw HTTP/1.1 over a socket, for requests no well-behaved client would send."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float
    """From the end of sending to the end of this response."""
    interim: list[int] = field(default_factory=list)


class _Unclosable:
    """The shared reader, minus close(): HTTPResponse closes its file after each body."""

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def close(self) -> None:
        pass


class _FileSocket:
    """What http.client.HTTPResponse needs of a socket: one shared buffered reader, so that
    several responses can be read one after the other from the same connection."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.fp = fp

    def makefile(self, mode: str) -> Any:
        return _Unclosable(self.fp)


class RawConnection:
    """A socket to the gateway; send bytes, read whole responses (Python's own parser)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.fp = self.sock.makefile("rb")
        self.sent_at = time.monotonic()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent_at = time.monotonic()

    def read_response(self, method: str = "GET", timeout: float = 10.0) -> RawResponse:
        self.sock.settimeout(timeout)
        resp = http.client.HTTPResponse(_FileSocket(self.fp), method=method)  # type: ignore[arg-type]
        resp.begin()  # skips 100 Continue
        body = resp.read()
        return RawResponse(resp.status, resp.headers, body, time.monotonic() - self.sent_at)

    def read_interim(self, timeout: float = 2.0) -> bytes:
        """The raw bytes of one head (e.g. ``HTTP/1.1 100 Continue``), without parsing."""
        self.sock.settimeout(timeout)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.fp.readline()
            if not line:
                break
            head += line
        return head

    def nothing_more(self, wait: float = 1.0) -> bool:
        """True if the server sends nothing more within ``wait`` (or closes)."""
        self.sock.settimeout(wait)
        try:
            data = self.fp.read1(1)
        except (TimeoutError, ConnectionResetError):
            return True
        return not data

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.fp.read1(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.fp.close()
        self.sock.close()


def exchange(port: int, data: bytes, method: str = "GET", timeout: float = 10.0) -> RawResponse:
    """Send ``data`` on a new connection and read one response."""
    with RawConnection(port, timeout) as conn:
        conn.send(data)
        return conn.read_response(method, timeout)
