"""The gateway's framing decisions, checked against a maintained reference parser (h11).

A generated corpus of requests with every combination of framing headers we could think of an
attacker sending is fed, byte for byte, both to h11 (as a server would parse it) and through
the gateway to Next's /api/echo, which reports the method and the digest of every body it got.
The rule: every request Next receives must be one h11 parsed identically (same method, same
body, in the same order). The gateway may be stricter than h11 (refuse what it accepts), and
every such case must be one of the documented kinds (docs/security.md); it may never be looser.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import time
from dataclasses import dataclass, field

import h11
import pytest
from support.procs import GatewayProcess
from support.rawhttp import RawConnection

BODY = b"5\r\nhello\r\n0\r\n\r\n"
CANARY = b"DELETE /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"

FRAMING = [
    [],
    ["Content-Length: 15"],
    ["Content-Length: 5"],
    ["Content-Length: 0"],
    ["Content-Length: 100"],
    ["Content-Length: 15", "Content-Length: 15"],
    ["Content-Length: 15, 17"],
    ["Content-Length: 15,17"],
    ["Content-Length: 5", "Content-Length: 15"],
    ["Content-Length: 015"],
    ["Content-Length: +15"],
    ["Content-Length: 1_5"],
    ["Content-Length: 15 "],
    ["Content-Length:15"],
    ["Content-Length: 0xf"],
    ["Transfer-Encoding: chunked"],
    ["Transfer-Encoding: Chunked"],
    ["Transfer-Encoding: chunked "],
    ["Transfer-Encoding:chunked"],
    ["Transfer-Encoding: xchunked"],
    ["Transfer-Encoding: chunked, identity"],
    ["Transfer-Encoding: identity, chunked"],
    ["Transfer-Encoding: gzip, chunked"],
    ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
    ["Transfer-Encoding: ,chunked"],
    ["Transfer-Encoding: chunked,"],
    ["Transfer-Encoding: \x0bchunked"],
    ["Transfer-Encoding: chunked", "Content-Length: 15"],
    ["Content-Length: 5", "Transfer-Encoding: chunked"],
    ["Content-Length: 0", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding : chunked"],
    ["Transfer-Encoding\t: chunked"],
    ["X-Pad: 1", " Transfer-Encoding: chunked"],
    ["Transfer_Encoding: chunked"],
    ["Content-Length: 15", "Connection: Content-Length"],
    ["Transfer-Encoding: chunked", "Connection: Transfer-Encoding"],
]
VERSIONS = ["HTTP/1.1", "HTTP/1.0"]
LINE_ENDS = ["\r\n", "\n"]


@dataclass
class Outcome:
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, sha256 of the body) of each request parsed completely, in order."""
    end: str = "done"  # done | refused | incomplete


def raw_request(lines: list[str], version: str, eol: str) -> bytes:
    head = f"POST /api/echo {version}{eol}Host: x{eol}" + "".join(f"{x}{eol}" for x in lines)
    return (head + eol).encode("latin-1") + BODY + CANARY


def reference(data: bytes) -> Outcome:
    """What h11, as a server, makes of ``data``."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out = Outcome()
    method, body = "", b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            out.end = "refused"
            return out
        if event is h11.NEED_DATA:
            out.end = "incomplete" if conn.their_state is not h11.IDLE else "done"
            return out
        if isinstance(event, h11.Request):
            method, body = event.method.decode(), b""
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            out.requests.append((method, hashlib.sha256(body).hexdigest()))
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return out
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return out


def through_gateway(port: int, data: bytes) -> Outcome:
    """What reaches Next when ``data`` is sent to the gateway."""
    out = Outcome()
    with RawConnection(port) as conn:
        conn.send(data)
        for _ in range(3):
            try:
                reply = conn.read_response("POST", timeout=0.6)
            except TimeoutError:
                out.end = "incomplete"
                break
            except (http.client.RemoteDisconnected, ConnectionResetError):
                break
            if reply.status != 200:
                out.end = "refused" if reply.status in (400, 501) else f"status {reply.status}"
                break
            seen = json.loads(reply.body)
            out.requests.append((seen["method"], seen["sha256"]))
            if seen["method"] == "DELETE" or reply.headers.get("Connection", "") == "close":
                break
    return out


CASES = list(itertools.product(range(len(FRAMING)), VERSIONS, LINE_ENDS))


def test_reference_parser_sees_the_corpus_as_intended() -> None:
    # The corpus is not vacuous: h11 accepts some cases, refuses others, waits on others.
    ends = {reference(raw_request(FRAMING[i], v, e)).end for i, v, e in CASES}
    assert ends == {"done", "refused", "incomplete"}


def test_gateway_never_frames_a_request_differently_from_h11(
    next_gateway: GatewayProcess,
) -> None:
    looser, stricter = [], []
    for index, version, eol in CASES:
        data = raw_request(FRAMING[index], version, eol)
        ref, got = reference(data), through_gateway(next_gateway.port, data)
        case = (FRAMING[index], version, repr(eol))
        # Everything Next received, h11 parsed the same way, in the same order.
        if got.requests != ref.requests[: len(got.requests)]:
            looser.append((case, got, ref))
        elif len(got.requests) < len(ref.requests) and got.end == "refused":
            stricter.append(case)
    assert not looser, looser
    # Stricter than h11 only where docs/security.md says so (RFC 9112 §5.2, §6.1 and §6.3
    # allow it): Transfer-Encoding together with Content-Length, and Transfer-Encoding in an
    # HTTP/1.0 request, are refused instead of read as chunked; obs-fold is refused.
    assert stricter, "the corpus should hold the documented stricter cases"
    for lines, version, _ in stricter:
        if any(x[:1] in (" ", "\t") for x in lines):
            continue  # obs-fold
        names = {x.split(":", 1)[0].lower() for x in lines}
        assert "transfer-encoding" in names, (lines, version)
        assert "content-length" in names or version == "HTTP/1.0", (lines, version)
    started = time.monotonic()
    status, _, _ = next_gateway.request("/about", timeout=5)
    assert status == 200 and time.monotonic() - started < 2.0  # still serving promptly
    assert "Traceback" not in next_gateway.log


@pytest.mark.parametrize("eol", LINE_ENDS)
def test_a_plain_request_passes_identically(next_gateway: GatewayProcess, eol: str) -> None:
    data = raw_request(["Content-Length: 15"], "HTTP/1.1", eol)
    ref, got = reference(data), through_gateway(next_gateway.port, data)
    assert ref.requests == got.requests and len(got.requests) == 2  # the body, then the canary
