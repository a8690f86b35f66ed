"""Raw clients of the gateway's HTTP-streaming realtime endpoints (http_stream, sse, uni_*)
and its emulation endpoint: what a browser's fetch or EventSource does, readable line by line."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any

from support.procs import http_request


class Stream:
    """One long response from ``/connection/<endpoint>``; :meth:`next` returns its messages
    one by one (SSE events split into their data lines, NDJSON lines as they are)."""

    def __init__(
        self,
        port: int,
        endpoint: str,
        body: str | None = None,
        query: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        path = f"/connection/{endpoint}"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        method = "POST" if body is not None else "GET"
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(
            method, path, body=body.encode() if body is not None else None, headers=headers
        )
        self.resp = self.conn.getresponse()
        self.sse = self.resp.headers.get("Content-Type", "").startswith("text/event-stream")
        self._pending: list[dict[str, Any]] = []

    @property
    def status(self) -> int:
        return self.resp.status

    def next(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next message, or None when the response ended."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            assert time.monotonic() < deadline, "no message in time"
            line = self.resp.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if self.sse:
                if not text.startswith("data: "):
                    continue  # the blank line ending an event, or a comment
                text = text[len("data: ") :]
            if text:
                self._pending.append(json.loads(text))
        return self._pending.pop(0)

    def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Skip messages until one matches (pings and the like in between)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            assert message is not None, "the stream ended"
            if predicate(message):
                return message

    def close(self) -> None:
        self.conn.close()


def emulate(
    port: int,
    session: str,
    node: str,
    *commands: dict[str, Any],
    path: str = "/connection/emulation",
) -> int:
    """POST commands for an emulated session, as the SDK does; the status."""
    body = json.dumps(
        {"session": session, "node": node, "data": "\n".join(json.dumps(c) for c in commands)}
    )
    status, _, _ = http_request(
        f"http://127.0.0.1:{port}{path}",
        "POST",
        headers={"Content-Type": "application/json"},
        body=body.encode(),
    )
    return status
