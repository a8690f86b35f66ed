"""Connections to the Next.js child and the interface the proxy needs from its supervisor."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from tornado.iostream import IOStream


class Upstream(Protocol):
    """Where the proxy sends requests. Implemented by the child supervisor."""

    def target(self) -> tuple[str, int] | None:
        """``(host, port)`` of the ready child, or None while it is not ready."""

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying while there is no target."""

    def status(self) -> str:
        """One word for the child's state (``starting``, ``backoff``, ``failed``...)."""


class UpstreamConnector:
    """Opens TCP connections to the child.

    The address is always a loopback IP literal, so no resolver (and no thread pool, which
    Tornado's default resolver would use) is involved.
    """

    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout

    async def open(self, host: str, port: int) -> IOStream:
        """A connected stream; raises OSError (refused, timed out) otherwise."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        stream = IOStream(sock)
        try:
            await asyncio.wait_for(stream.connect((host, port)), self.connect_timeout)
        except TimeoutError:
            stream.close()
            raise TimeoutError(f"connect to {host}:{port} timed out") from None
        except Exception as e:
            stream.close()
            real = getattr(e, "real_error", None)
            raise (real if isinstance(real, OSError) else ConnectionError(str(e))) from None
        stream.set_nodelay(True)
        return stream
