"""The reverse proxy: every request the gateway does not own goes to Next.js.

This is a Tornado routing target that works on the HTTP/1.1 connection directly (an
``HTTPMessageDelegate`` per request), not a ``RequestHandler``: the proxy needs none of what a
handler adds (cookies, XSRF, ETag computation, output transforms, header re-validation), and
dropping that machinery is most of the gateway's CPU per proxied request (docs/benchmarks.md).

Bodies stream in both directions. A request body is written upstream chunk by chunk as Tornado
reads it, and Tornado reads the next chunk only when the upstream socket has taken the last one.
A response body is written to the client chunk by chunk, and the next chunk is read from Next
only when the client's socket has taken the last one: a slow client slows Next down instead of
filling the gateway's memory.

Next's side is an asyncio protocol with a sans-I/O response parser (upstream.py, http11.py),
from a keep-alive pool. A request that fails on a reused connection
before any byte of response arrived (Next closed it at that moment) is sent again once on a new
connection, if that is safe: an idempotent method without a body.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.client import responses
from typing import Any, Protocol

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from gateway.observability import log_access
from gateway.proxy.client_stream import ClientStream, write_whole_response
from gateway.proxy.compression import (
    CacheKey,
    CompressedCache,
    CompressionPolicy,
    Compressor,
    cacheable_etag,
    compress_whole,
    merge_vary,
    negotiate,
    not_modified_etag,
    stream_compressor,
    upstream_if_none_match,
    variant_etag,
)
from gateway.proxy.framing import (
    NO_BODY,
    BodyFraming,
    FramingRefused,
    align_reader,
    check_target,
    request_framing,
)
from gateway.proxy.headers import ForwardingPolicy, strip_hop_by_hop
from gateway.proxy.http11 import date_field, request_head
from gateway.proxy.microcache import HEADER as CACHE_HEADER
from gateway.proxy.microcache import (
    MISS,
    STALE,
    Entry,
    Freshness,
    MicroCache,
    freshness,
    head_bytes,
)
from gateway.proxy.refresh import fetch_whole
from gateway.proxy.static import (
    PREFIX,
    Asset,
    Representation,
    StaticAssets,
    byte_range,
    choose,
    etag_matches,
    whole_head,
)
from gateway.proxy.upstream import PoolBusy, Upstream, UpstreamConnection, UpstreamPool
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 §9.2.2
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNLIMITED = 2**62
_NEGOTIATED = frozenset({"accept-encoding", "if-none-match"})  # rewritten when compressing
# Request fields a background refresh does not send: it asks for the whole response.
_CONDITIONAL = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since"})
# Longest a request for a static file waits for a new build's set to be read, when the child
# cannot serve the file itself (a standalone build); reading takes well under a second here.
_STATIC_LOAD_WAIT = 10.0
# Longest a response head waits for its first piece of body (see ProxyExchange.flush).
_HEAD_HOLD = 0.02
# Largest body with a strong ETag that is held until it is all here, then compressed once and
# cached: a prerendered page, which Next sends in one go anyway. Longer ones stream.
_WHOLE_MAX = 4 * 1024 * 1024


class ResponseObserver(Protocol):
    def response(self, kind: str, status: int, upstream_seconds: float | None = None) -> None:
        """A response went out: ``kind`` is proxied or static."""


@dataclass
class ProxySettings:
    """Everything a proxied request needs, shared by all requests."""

    upstream: Upstream
    pool: UpstreamPool
    forwarding: ForwardingPolicy
    static: StaticAssets | None
    max_body_size: int
    first_byte_timeout: float
    idle_timeout: float
    body_timeout: float = 60.0
    """Longest silence while reading a request body (nginx's client_body_timeout)."""
    body_buffer: int = 64 * 1024
    """Request body bytes held before a connection to Next is taken (0: stream at once)."""
    public_port: int = 80
    """The gateway's port, for X-Forwarded-Port."""
    observer: ResponseObserver | None = None
    """Told about every response (metrics)."""
    access_log: bool = True
    draining: Callable[[], bool] = lambda: False
    """The gateway is shutting down: each answer closes its connection (no keep-alive)."""
    compression: CompressionPolicy | None = None
    """Compress Next's responses to the client (None: bodies pass as Next encoded them)."""
    compressed: CompressedCache | None = None
    """Compressed bodies of responses with a strong ETag, so each is compressed once."""
    micro_cache: MicroCache | None = None
    """Shared-cacheable responses answered without Next (microcache.py); None: off."""
    refreshes: BackgroundTasks = field(default_factory=lambda: BackgroundTasks("micro-cache"))
    """The micro-cache's background refreshes of stale entries."""
    in_flight: int = 0
    """Requests being answered right now (graceful shutdown waits for them)."""


def error_page(
    status: int, title: str, detail: str, retry_after: int | None, accept: str
) -> tuple[str, bytes]:
    """A small body for the gateway's own error responses: HTML for browsers, JSON otherwise."""
    if "text/html" in accept:
        refresh = f'<meta http-equiv="refresh" content="{retry_after}">' if retry_after else ""
        body = (
            f"<!doctype html><html><head><meta charset=utf-8>{refresh}<title>{status} "
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(detail)}</p></body></html>"
        )
        return "text/html; charset=utf-8", body.encode()
    payload: dict[str, Any] = {"error": title.lower().replace(" ", "_"), "detail": detail}
    if retry_after is not None:
        payload["retry_after"] = retry_after
    return "application/json", json.dumps(payload).encode()


class ProxyService(httputil.HTTPServerConnectionDelegate):
    """The routing target for everything that goes to Next.js."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        assert isinstance(request_conn, HTTP1Connection)
        return ProxyExchange(self.settings, request_conn)


class ProxyExchange(httputil.HTTPMessageDelegate):
    """One client request relayed to Next, and its response relayed back.

    Tornado calls the ``HTTPMessageDelegate`` methods as the client's request arrives; the
    upstream connection calls ``on_head`` / ``on_body`` / ``on_end`` / ``on_lost`` as Next's
    response arrives.
    """

    def __init__(self, settings: ProxySettings, client: HTTP1Connection) -> None:
        self.s = settings
        self.client = client
        self.method = "GET"
        self.uri = "/"
        self.headers = httputil.HTTPHeaders()
        self.status = 0
        self.started = 0.0
        self._target: tuple[str, int] | None = None
        self._conn: UpstreamConnection | None = None
        self._reused = False
        self._outcome: asyncio.Future[bool] | None = None
        self._framing: BodyFraming = NO_BODY
        self._has_body = False
        self._chunked_body = False
        self._body_bytes = 0
        self._request_read = False  # Tornado has read the whole request (finish() was called)
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._upstream_draining = False
        self._held: list[bytes] = []  # body received before the connection to Next is open
        self._held_bytes = 0
        self._opened = False  # a connection to Next was opened for this request
        self._asset: Asset | None = None
        self._answered = False  # the gateway answered itself (error or static)
        self._responded = False  # a complete response went out (or the connection was cut)
        self._client_gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out: str | None = None
        self._upstream_head: bytes | None = None
        self._pending_head: tuple[httputil.ResponseStartLine, httputil.HTTPHeaders] | None = None
        self._pieces: list[bytes] = []
        self._ended = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_sent = False
        self._head_or_body_seen = False
        self._waiting_for_client = False
        self._last_activity = 0.0
        self._logged = True  # until headers_received starts the exchange
        self._bytes_out = 0
        self._sent_at = 0.0
        self._upstream_seconds: float | None = None
        # Compression of Next's response (decided once, by _shape, when its head is written).
        self._shaped = False
        self._coding: str | None = None  # the coding applied to the body, None: as Next sent it
        self._compressor: Compressor | None = None  # a streamed body's
        self._whole = False  # held until its end, then compressed (or taken from the cache) once
        self._cache_key: CacheKey | None = None
        # The micro-cache: a GET/HEAD looked up (then MISS), the entry that answers it, and
        # the copy of a storable response's body as it streams (microcache.py).
        self._looked_up = False
        self._cached: tuple[Entry, str] | None = None
        self._generation = 0
        self._fresh: Freshness | None = None  # set while a storable response streams
        self._capture: list[bytes] = []
        self._captured = 0
        self._capture_fields: list[tuple[str, str]] = []

    # -- the client's request (called by Tornado) ---------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[Any] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.started = time.perf_counter()
        self.method, self.uri, self.headers = start_line.method, start_line.path, headers
        self._logged = False
        self.s.in_flight += 1
        if self.s.draining():
            # Shutting down: answer this one, then close, so that keep-alive clients do not
            # keep the drain waiting with new requests (Tornado adds Connection: close itself).
            self.client._disconnect_on_finish = True
        # The body limit is enforced here, with a 413 instead of Tornado's 400. An answer given
        # before the body is read makes Tornado close the connection after it.
        self.client.set_max_body_size(_UNLIMITED)
        try:
            check_target(self.uri)
            self._framing = framing = request_framing(start_line.version, headers)
        except FramingRefused as e:
            align_reader(headers, None)  # read no body: the connection closes after the answer
            self._answer(e.status, responses.get(e.status, "Bad Request"), e.detail)
            return None
        align_reader(headers, framing)
        self._chunked_body = framing.chunked
        self._has_body = framing.has_body  # before any early answer: it closes lingering
        if self.method not in _METHODS:
            self._answer(405, "Method Not Allowed", f"{self.method} is not supported.")
            return None
        expect = headers.get("Expect")
        if expect is not None and not self._expectation_met(expect, headers):
            return None
        static = self.s.static
        if static is not None and self.method in ("GET", "HEAD") and not self._has_body:
            if (self.uri.startswith(PREFIX) or static.serves_public) and self._find_static(static):
                return None  # answered in finish(), once the (empty) body is read
            if (
                static.loading
                and static.authoritative
                and (self.uri.startswith(PREFIX) or static.serves_public)
            ):
                # The child has no copy of the new build's files: wait for the set.
                return self._find_static_once_loaded(static)
        cache = self.s.micro_cache
        if cache is not None and self.method in ("GET", "HEAD") and not self._has_body:
            if "Range" not in headers and self._look_up(cache):
                return None  # answered in finish(), once the (empty) body is read
        if framing.length > self.s.max_body_size:
            self._answer(413, "Payload Too Large", self._too_large())
            return None
        self._target = self.s.upstream.target()
        if self._has_body:
            if self._target is None:
                self._answer_unavailable()
                return None
            self._body_watch_on()
            if self.s.body_buffer <= 0:
                return self._open_upstream(allow_reuse=True)  # Tornado answers 100 after it
            # The body is held until s.body_buffer bytes or its end before a connection to
            # Next is taken (nginx buffers whole bodies): a client that trickles a small body
            # never pins one, and a small body leaves in one write with its head. Past that,
            # it streams.
        return None

    def _expectation_met(self, expect: str, headers: httputil.HTTPHeaders) -> bool:
        """RFC 9110 §10.1.1: 100-continue is the only expectation; others get 417."""
        if expect.strip().lower() != "100-continue":
            self._answer(417, "Expectation Failed", "Only Expect: 100-continue is supported.")
            return False
        if expect != "100-continue":
            headers["Expect"] = "100-continue"  # the spelling Tornado's reader answers
        return True

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._responded:
            return None  # already answered: the rest of the body is discarded
        self._body_seen = asyncio.get_running_loop().time()
        self._body_bytes += len(chunk)
        if self._body_bytes > self.s.max_body_size:
            self._discard_upstream()
            self._answer(413, "Payload Too Large", self._too_large())
            return None
        conn = self._conn
        if conn is None and not self._opened:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
            if self._held_bytes < self.s.body_buffer:
                return None
            return self._open_for_body()  # sends what is held; Tornado reads on after it
        if conn is None or conn.closed:
            return None  # Next is gone; answered once the body is read
        if self._chunked_body:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            conn.send(chunk)
        if not conn.write_paused:
            return None
        return self._wait_for_upstream(conn)  # Tornado reads on once Next has taken this

    async def _open_for_body(self) -> None:
        await self._open_upstream(allow_reuse=True)

    async def _wait_for_upstream(self, conn: UpstreamConnection) -> None:
        self._upstream_draining = True  # time spent here is Next's, not the client's
        try:
            await conn.drain()
        finally:
            self._upstream_draining = False
            self._body_seen = asyncio.get_running_loop().time()

    def finish(self) -> None:
        """The request is fully read: answer it (in a task; Tornado does not await this)."""
        self._request_read = True
        self._body_watch_off()
        if self._responded:
            return
        self.client.set_close_callback(self.on_connection_close)
        if self._asset is not None:
            self._send_asset(self._asset)
            return
        if self._cached is not None:
            self._send_cached(*self._cached)
            return
        task = asyncio.ensure_future(self._relay())
        task.add_done_callback(self._relay_done)

    def on_connection_close(self) -> None:
        # The client went away: abort the upstream request so Next stops producing for nobody.
        self._client_gone = True
        self._body_watch_off()
        self._discard_upstream()
        self._log_access()

    def _relay_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("proxy failure for %s %s", self.method, self.uri, exc_info=exc)
            self._discard_upstream()
            if not self._client_gone:
                if self._head_sent:
                    self._abort_client()
                else:
                    self._answer(502, "Bad Gateway", "The gateway failed to relay the request.")

    # -- relaying -----------------------------------------------------------------------------

    async def _relay(self) -> None:
        """Send the end of the request and wait for the response; retry once when safe."""
        for attempt in (1, 2):
            if self._conn is None:
                if self._target is None:
                    self._answer_unavailable()
                    return
                if self._opened and self._has_body:
                    # Next went away while the body streamed to it: it cannot be sent again.
                    await self._upstream_unreachable("closed the connection during the body")
                    return
                if not await self._open_upstream(allow_reuse=attempt == 1):
                    return
            conn, outcome = self._conn, self._outcome
            assert conn is not None and outcome is not None
            if self._chunked_body:
                conn.send(b"0\r\n\r\n")
            conn.request_sent = True  # the whole request is out: the connection may be reused
            if not outcome.done():
                self._watchdog_on()
            if await outcome:
                return  # on_end finished the response
            started = conn.response_started
            self._discard_upstream()
            if self._client_left():
                return
            if self._head_sent:
                # Head (and part of the body) are out: the only honest signal left is to cut
                # the connection, so the client sees a truncated message, never a complete one.
                log.warning(
                    "upstream %s mid-response: %s %s",
                    "timed out" if self._timed_out else "closed",
                    self.method,
                    self.uri,
                )
                self._abort_client()
                return
            if attempt == 1 and self._reused and not started and not self._timed_out:
                if self._replayable():
                    log.debug("pooled connection was closed by Next; retrying %s", self.uri)
                    continue
            if self._timed_out:
                self._answer(
                    504, "Gateway Timeout", "The application server did not respond in time."
                )
            else:
                await self._upstream_unreachable("closed the connection before responding")
            return

    def _client_left(self) -> bool:  # a method: the flag changes while we await
        return self._client_gone

    def _replayable(self) -> bool:
        return self.method in _IDEMPOTENT and not self._has_body

    # -- Next's response (called by the upstream connection) ----------------------------------
    #
    # Everything the parser reports from one read of Next's socket is batched and written to the
    # client by flush(), called once per read: a small response read whole goes out in one
    # write (head and body), and a large one in one write per socket read instead of one per
    # chunk. On loopback each write is a send() and a wake-up of the reader: the measured bulk
    # of the proxy's CPU per small response.

    def on_head(
        self, code: int, reason: str, headers: httputil.HTTPHeaders, keep_alive: bool
    ) -> None:
        self.status = code
        self._upstream_seconds = time.perf_counter() - self._sent_at
        strip_hop_by_hop(headers)
        self._pending_head = (httputil.ResponseStartLine("HTTP/1.1", code, reason), headers)
        if self._looked_up:
            self._capture_if_storable(code, headers)

    def on_body(self, data: bytes) -> None:
        self._pieces.append(data)

    def on_end(self) -> None:
        self._ended = True

    def on_lost(self, error: Exception | None) -> None:
        log.debug("upstream lost for %s %s: %r", self.method, self.uri, error)
        self._pieces.clear()
        self._pending_head = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._settle(False)

    def flush(self) -> None:
        """Write what the last read produced; finish the response if it ended."""
        self._touch()
        if self._client_gone:
            return
        if self._pending_head is not None and not self._pieces and not self._ended:
            # A head alone: Next writes it before the body (compressed bodies come from
            # zlib a moment later). Hold it briefly so that it leaves with the first piece of
            # body, one write instead of two; an event stream's head goes at once (EventSource
            # reports "open" on it).
            content_type = self._pending_head[1].get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                if self._head_timer is None:
                    loop = asyncio.get_running_loop()
                    self._head_timer = loop.call_later(_HEAD_HOLD, self._release_head)
                return
        self._write_out()

    def _release_head(self) -> None:
        self._head_timer = None
        if not self._client_gone and self._pending_head is not None:
            self._write_out()

    def _write_out(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._pending_head is not None:
            head, headers = self._pending_head
            if not self._shaped:
                self._shape(head.code, headers)
            if self._whole and not self._ended:
                return  # a complete page to compress once: written when it has all arrived
            self._pending_head = None
            self._head_sent = True
            body = b"".join(self._pieces) if self._pieces else None
            self._pieces.clear()
            if self._looked_up:
                headers[CACHE_HEADER] = MISS
                if self._fresh is not None and body:
                    self._capture_piece(body)
            if self._coding is not None:
                body = self._encode_first(headers, body)
            if not self._request_read:
                # Next answered before the request body was all here: Tornado closes the
                # connection after this response rather than read the rest; say so.
                headers["Connection"] = "close"
                self._linger()
            if self._ended and body and "Content-Length" not in headers:
                # The whole body is here: send it with a length rather than as chunks, which
                # saves the separate write of the final empty chunk (framing is per hop).
                headers["Content-Length"] = str(len(body))
            if body:
                self._bytes_out += len(body)
            self._watch_write(self.client.write_headers(head, headers, body))
        elif self._pieces or (self._compressor is not None and self._ended):
            data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
            self._pieces.clear()
            if self._fresh is not None and data:
                self._capture_piece(data)
            if self._compressor is not None:
                data = self._compress(data)
            if data:
                self._bytes_out += len(data)
                self._watch_write(self.client.write(data))
        if self._ended:
            self._ended = False
            if self._fresh is not None:
                self._store()
            self._finish_response()
            conn, self._conn = self._conn, None
            if conn is not None and self._target is not None:
                self.s.pool.release(self._target, conn)
            self._settle(True)

    # -- compression (the rules are in compression.py) ----------------------------------------

    def _shape(self, status: int, headers: httputil.HTTPHeaders) -> None:
        """Decide, once, what the client gets: Next's body as it is, compressed as it streams,
        or compressed whole (and cached, with a strong ETag). Rewrites the head to match."""
        self._shaped = True
        policy = self.s.compression
        if policy is None:
            return
        length: int | None = None
        declared = headers.get("Content-Length")
        if declared is not None and declared.isdigit():
            length = int(declared)
        elif self._ended:
            length = sum(len(piece) for piece in self._pieces)
        accept = self.headers.get("Accept-Encoding", "")
        plan = policy.plan(self.method, status, accept, headers, length)
        if status == 304:
            self._not_modified(headers)
        if plan.vary:
            vary = merge_vary(headers.get_list("Vary"))
            if vary is not None:
                headers["Vary"] = vary
        if plan.coding is None:
            return
        self._coding = coding = plan.coding
        headers["Content-Encoding"] = coding
        headers.pop("Accept-Ranges", None)  # ranges would be of the identity (as nginx does)
        etag = headers.get("ETag")
        cache, strong = self.s.compressed, cacheable_etag(self.method, status, headers)
        if etag is not None:
            variant = variant_etag(etag, coding)
            if variant is None:
                del headers["ETag"]
            else:
                headers["ETag"] = variant
        if cache is not None and cache.max_bytes and strong is not None:
            self._cache_key = (self.uri, coding, strong)
            if self._ended or (length is not None and length <= _WHOLE_MAX):
                self._whole = True
                return
        if self._ended:
            self._whole = True
            return
        headers.pop("Content-Length", None)  # chunked: the compressed size is not known yet
        self._compressor = stream_compressor(coding, policy)

    def _encode_first(self, headers: httputil.HTTPHeaders, body: bytes | None) -> bytes | None:
        """The body that goes with the head, compressed as :meth:`_shape` decided."""
        if self._whole:
            assert self._coding is not None and self.s.compression is not None
            cache, key = self.s.compressed, self._cache_key
            packed = cache.get(key) if cache is not None and key is not None else None
            if packed is None:
                packed = compress_whole(self._coding, body or b"", self.s.compression)
                if cache is not None and key is not None:
                    cache.put(key, packed)
            headers["Content-Length"] = str(len(packed))
            return packed
        if body is None:
            return None
        return self._compress(body) or None

    def _compress(self, data: bytes) -> bytes:
        """Compress and flush what one read of Next's socket produced (and end the stream when
        the response ended): the client gets every piece when it would have uncompressed."""
        compressor = self._compressor
        assert compressor is not None
        out = compressor.compress(data) if data else b""
        if self._ended:
            out += compressor.finish()
            self._compressor = None
        return out

    def _not_modified(self, headers: httputil.HTTPHeaders) -> None:
        """A 304 confirms the representation the client named: give it back the variant's ETag
        (and Vary) if the client named one of ours."""
        etag, if_none_match = headers.get("ETag"), self.headers.get("If-None-Match")
        if etag is None or if_none_match is None:
            return
        confirmed = not_modified_etag(etag, if_none_match)
        if confirmed != etag:
            headers["ETag"] = confirmed
            vary = merge_vary(headers.get_list("Vary"))
            if vary is not None:
                headers["Vary"] = vary

    # -- the micro-cache (the rules are in microcache.py) --------------------------------------

    def _forwarded_value(self, name: str) -> str:
        """A request field as Next gets it: the value of a name in ``Vary``, for the key."""
        if name == "accept-encoding" and self.s.compression is not None:
            return "identity"  # the gateway asks Next for identity bodies (_upstream_headers)
        return ", ".join(self.headers.get_list(name))

    def _look_up(self, cache: MicroCache) -> bool:
        """True when the micro-cache answers this GET/HEAD (in finish(), without Next)."""
        self._looked_up = True
        self._generation = cache.generation  # a purge from now on: this response is not kept
        self._cached = cache.lookup(self.uri, self._forwarded_value)
        return self._cached is not None

    def _send_cached(self, entry: Entry, state: str) -> None:
        """Answer from an entry: its response in the coding the client negotiates (compressed
        bytes from compression.py's cache, so a hit compresses nothing), or 304 when a
        validator matches. The first request that finds it stale starts its refresh."""
        cache = self.s.micro_cache
        assert cache is not None
        if state == STALE and cache.begin_refresh(entry):
            self._refresh(cache, entry)
        h = self.headers
        coding = negotiate(h.get("Accept-Encoding", "")) if entry.compressible else None
        per_response = [("Age", str(entry.age(cache.clock()))), (CACHE_HEADER, state)]
        body = b""
        if entry.not_modified(coding, h.get("If-None-Match"), h.get("If-Modified-Since")):
            self.status, reason = 304, "Not Modified"
            pairs = [*entry.not_modified_fields(coding), *per_response]
        else:
            self.status, reason = 200, "OK"
            whole = self._cached_body(entry, coding)
            pairs = [*entry.response_fields(coding, len(whole)), *per_response]
            if self.method == "GET":
                body = whole
        self._bytes_out = len(body)
        head = head_bytes(f"HTTP/1.1 {self.status} {reason}", pairs) + date_field()
        written = write_whole_response(self.client, head, body)
        if written is None:  # HTTP/1.0 or TLS: Tornado writes the head
            out = httputil.HTTPHeaders()
            for name, value in pairs:
                out.add(name, value)
            out["Date"] = email.utils.formatdate(usegmt=True)
            start = httputil.ResponseStartLine("HTTP/1.1", self.status, reason)
            self.client.write_headers(start, out, body)
            self._finish_response()
        elif written.done():
            self._whole_written(written)
        else:
            written.add_done_callback(self._whole_written)

    def _cached_body(self, entry: Entry, coding: str | None) -> bytes:
        if coding is None:
            return entry.body
        policy, compressed = self.s.compression, self.s.compressed
        assert policy is not None
        key = (entry.url, coding, entry.body_tag)
        packed = compressed.get(key) if compressed is not None and compressed.max_bytes else None
        if packed is None:
            packed = compress_whole(coding, entry.body, policy)
            if compressed is not None and compressed.max_bytes:
                compressed.put(key, packed)
        return packed

    def _capture_if_storable(self, code: int, headers: httputil.HTTPHeaders) -> None:
        """On Next's response head: keep a copy of the body as it streams if the response may
        be stored (and is not declared larger than an entry may be)."""
        cache = self.s.micro_cache
        assert cache is not None
        self._capture.clear()
        self._captured = 0
        self._fresh = freshness(self.method, code, headers, cache.max_ttl)
        declared = headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cache.max_object_size:
            self._fresh = None
        if self._fresh is not None:
            self._capture_fields = list(headers.get_all())  # before _shape rewrites them

    def _capture_piece(self, data: bytes) -> None:
        cache = self.s.micro_cache
        assert cache is not None
        self._captured += len(data)
        if self._captured > cache.max_object_size:
            self._fresh = None  # a stream longer than an entry may be: it only passes through
            self._capture.clear()
            return
        self._capture.append(data)

    def _store(self) -> None:
        cache, fresh = self.s.micro_cache, self._fresh
        assert cache is not None and fresh is not None
        self._fresh = None
        body = b"".join(self._capture)
        self._capture.clear()
        self._keep(cache, self._capture_fields, body, fresh, self._generation)

    def _keep(
        self,
        cache: MicroCache,
        fields: list[tuple[str, str]],
        body: bytes,
        fresh: Freshness,
        generation: int,
    ) -> Entry | None:
        entry = cache.store(self.uri, self._forwarded_value, fields, body, fresh, generation)
        if entry is not None and self.s.compression is not None:
            # Whether a client gets it compressed then depends on its Accept-Encoding alone:
            # the policy is asked once, as for a client that accepts any coding.
            plan = self.s.compression.plan("GET", 200, "*", entry.fields, len(body))
            entry.compressible = plan.coding is not None
            entry.vary_encoding = plan.vary
        return entry

    def _refresh(self, cache: MicroCache, entry: Entry) -> None:
        """Ask Next for a stale entry's page again, for the cache alone (this client and those
        after it get the stale entry until the new one is stored)."""
        target = self.s.upstream.target()
        if target is None:
            cache.end_refresh(entry)
            return
        fields = [(n, v) for n, v in self._upstream_headers() if n.lower() not in _CONDITIONAL]
        head = request_head("GET", self.uri, fields)
        self.s.refreshes.spawn(
            self._refreshed(cache, entry, target, head, cache.generation), "refresh " + self.uri
        )

    async def _refreshed(
        self,
        cache: MicroCache,
        entry: Entry,
        target: tuple[str, int],
        head: bytes,
        generation: int,
    ) -> None:
        try:
            got = await fetch_whole(
                self.s.pool, target, head, cache.max_object_size, self.s.first_byte_timeout
            )
            if got is None:
                return
            status, headers, body = got
            fresh = freshness("GET", status, headers, cache.max_ttl)
            kept = None
            if fresh is not None:
                kept = self._keep(cache, list(headers.get_all()), body, fresh, generation)
            if kept is None:  # Next's answer may not be stored (any more): nor may the old one
                cache.discard(entry)
        finally:
            cache.end_refresh(entry)

    def _settle(self, complete: bool) -> None:
        self._watchdog_off()
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(complete)

    def _watch_write(self, written: asyncio.Future[None]) -> None:
        """Backpressure: while the client has not taken a write, Next's socket is not read."""
        if written.done():
            if written.exception() is not None:  # StreamClosedError: the client left
                self.on_connection_close()
            return
        conn = self._conn
        if conn is not None:
            conn.pause_reading()
        self._waiting_for_client = True
        written.add_done_callback(lambda f: self._after_write(conn, f))

    def _after_write(
        self, paused: UpstreamConnection | None, written: asyncio.Future[None]
    ) -> None:
        self._waiting_for_client = False
        self._touch()  # time spent waiting for a slow client is not Next's idleness
        if written.exception() is not None:
            self.on_connection_close()
            return
        if paused is not None and paused is self._conn:  # still ours, not recycled meanwhile
            paused.resume_reading()

    def _finish_response(self) -> None:
        self._responded = True
        try:
            self.client.finish()
        except (StreamClosedError, httputil.HTTPOutputError) as e:
            log.debug("could not finish %s %s: %r", self.method, self.uri, e)
            self.client.close()
        self._log_access()

    # -- upstream connection ------------------------------------------------------------------

    async def _open_upstream(self, allow_reuse: bool) -> bool:
        """Connect (or reuse) and send the request head; on failure answer 502/503."""
        target = self._target
        assert target is not None
        try:
            if allow_reuse:
                conn, self._reused = await self.s.pool.acquire(target)
            else:
                conn, self._reused = await self.s.pool.acquire_new(target), False
        except PoolBusy:
            log.warning("upstream connection limit reached: %s %s refused", self.method, self.uri)
            self._answer(503, "Service Unavailable", "The application server is busy.", 1)
            return False
        except OSError as e:
            await self._upstream_unreachable(str(e))
            return False
        if self._client_gone:
            self.s.pool.release(target, conn)
            return False
        if self._upstream_head is None:  # built once, reused by a retry
            self._upstream_head = request_head(self.method, self.uri, self._upstream_headers())
        self._conn = conn
        self._opened = True
        self._outcome = asyncio.get_running_loop().create_future()
        self._sent_at = time.perf_counter()
        head = self._upstream_head
        if self._held:  # the body so far goes in the same write as the head
            held = b"".join(self._held)
            self._held.clear()
            head += b"%x\r\n%s\r\n" % (len(held), held) if self._chunked_body else held
        conn.start(self, self.method, head)
        return True

    def _upstream_headers(self) -> list[tuple[str, str]]:
        context = self.client.context
        peer = getattr(context, "remote_ip", "") or ""
        scheme = getattr(context, "protocol", "http") or "http"
        host = self.headers.get("Host", "")
        if self.s.compression is None:
            headers = self.s.forwarding.upstream_headers(
                self.headers, peer, scheme, host, self.s.public_port
            )
        else:
            # The gateway compresses: Next sends identity bodies, and a validator of one of our
            # compressed variants is named to it as its own tag (compression.py).
            headers = self.s.forwarding.upstream_headers(
                self.headers, peer, scheme, host, self.s.public_port, _NEGOTIATED
            )
            headers.append(("Accept-Encoding", "identity"))
            if_none_match = self.headers.get_list("If-None-Match")
            if if_none_match:
                headers.append(("If-None-Match", upstream_if_none_match(", ".join(if_none_match))))
        # The gateway frames the body itself, as framing.py decided (never the client's words).
        if self._chunked_body:
            headers.append(("Transfer-Encoding", "chunked"))
        elif self._framing.length or "Content-Length" in self.headers:
            headers.append(("Content-Length", str(self._framing.length)))
        return headers

    def _discard_upstream(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._target is not None:
            conn.abort()
            self.s.pool.release(self._target, conn)
        self._settle(False)

    # -- watchdog: first-byte and idle timeouts -----------------------------------------------
    #
    # One timer per exchange, moved lazily: activity only records the time, and the timer, when
    # it fires, re-arms itself for the rest of the interval. Cancelling and re-creating a timer
    # per chunk cost more than the rest of the chunk's handling.

    def _watchdog_on(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._last_activity + self._timeout(), self._check_idle)

    def _watchdog_off(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _touch(self) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        self._head_or_body_seen = True

    def _timeout(self) -> float:
        return self.s.idle_timeout if self._head_or_body_seen else self.s.first_byte_timeout

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        deadline = self._last_activity + self._timeout()
        if self._waiting_for_client or loop.time() < deadline:
            self._timer = loop.call_at(max(deadline, loop.time() + 0.05), self._check_idle)
            return
        self._timed_out = "idle" if self._head_or_body_seen else "first byte"
        if self._conn is not None:
            self._conn.abort()  # _relay answers 504, or cuts a response already under way
        self._settle(False)

    # -- request body timeout -----------------------------------------------------------------
    #
    # A client that trickles its body holds an upstream connection (and Next's parser) for as
    # long as it likes; nginx's client_body_timeout is the model: the longest silence between
    # two reads, not a deadline for the whole body, so a slow but steady upload still works.

    def _body_watch_on(self) -> None:
        loop = asyncio.get_running_loop()
        self._body_seen = loop.time()
        self._body_timer = loop.call_at(self._body_seen + self.s.body_timeout, self._body_idle)

    def _body_watch_off(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._body_timer = None
        if self._request_read or self._client_gone:
            return
        deadline = self._body_seen + self.s.body_timeout
        if self._upstream_draining or loop.time() < deadline:
            self._body_timer = loop.call_at(max(deadline, loop.time() + 0.05), self._body_idle)
            return
        log.info("request body idle for %g s: %s %s", self.s.body_timeout, self.method, self.uri)
        self._discard_upstream()
        if self._head_sent:
            self._abort_client()
        else:
            self._answer(408, "Request Timeout", "The request body stopped arriving.")

    # -- static fast path ---------------------------------------------------------------------

    def _find_static(self, static: StaticAssets) -> bool:
        """True if the gateway answers this static path itself (the asset, or a 404)."""
        if "Range" in self.headers and not static.authoritative:
            return False  # rare for these files; Next.js implements ranges
        path = self.uri.split("?", 1)[0]
        asset = static.lookup(path)
        if asset is not None:
            self._asset = asset
            return True
        if static.refused(path):
            self._answer(404, "Not Found", "No such static file.")
            return True
        return False  # e.g. a build newer than the set in memory: Next has it

    async def _find_static_once_loaded(self, static: StaticAssets) -> None:
        await static.wait_loaded(_STATIC_LOAD_WAIT)
        if (self.uri.startswith(PREFIX) or static.serves_public) and self._find_static(static):
            return
        self._target = self.s.upstream.target()  # as headers_received does for a GET

    def _send_asset(self, asset: Asset) -> None:
        rep = choose(asset, self.headers.get("Accept-Encoding", ""))
        if self._send_whole(asset, rep):
            return
        out = httputil.HTTPHeaders()
        out["Cache-Control"] = asset.cache_control
        out["Accept-Ranges"] = "bytes"
        out["Last-Modified"] = asset.last_modified
        out["ETag"] = rep.etag
        out["Content-Type"] = asset.content_type
        out["Vary"] = "Accept-Encoding"
        out["Date"] = email.utils.formatdate(usegmt=True)
        if rep.encoding:
            out["Content-Encoding"] = rep.encoding
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            not_modified = etag_matches(if_none_match, [rep.etag])
        else:
            not_modified = _not_modified_since(
                self.headers.get("If-Modified-Since"), asset.last_modified
            )
        size = len(asset.identity.body)
        body = b""
        unsatisfiable = False
        try:
            # Asked only of a set the child cannot serve (see _find_static).
            span = None if not_modified or "Range" not in self.headers else self._range_of(asset)
        except ValueError:
            unsatisfiable, span = True, None
        if unsatisfiable:
            self.status = 416  # RFC 9110 §15.5.17: no byte of the range exists
            out.pop("Content-Encoding", None)
            out["Content-Range"] = f"bytes */{size}"
            out["Content-Length"] = "0"
        elif not_modified:
            self.status = 304
        elif span is not None:
            # A range of the identity representation (RFC 9110 §14.1.2), whatever was accepted.
            first, last = span
            self.status = 206
            out.pop("Content-Encoding", None)
            out["ETag"] = asset.identity.etag
            out["Content-Range"] = f"bytes {first}-{last}/{size}"
            out["Content-Length"] = str(last - first + 1)
            if self.method != "HEAD":
                body = asset.identity.body[first : last + 1]
        else:
            self.status = 200
            out["Content-Length"] = str(len(rep.body))
            body = rep.body if self.method != "HEAD" else b""
        self.client.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", self.status, ""), out, body
        )
        self._finish_response()

    def _send_whole(self, asset: Asset, rep: Representation) -> bool:
        """The usual request for a static file, a plain GET: its prebuilt head and body in one
        send (client_stream.write_whole_response); False for anything else (conditional,
        range, HEAD, HTTP/1.0), which the general path above answers with the same headers."""
        h = self.headers
        if self.method != "GET" or "If-None-Match" in h or "If-Modified-Since" in h or "Range" in h:
            return False
        written = write_whole_response(self.client, whole_head(asset, rep), rep.body)
        if written is None:
            return False
        self.status = 200
        self._bytes_out = len(rep.body)
        if written.done():
            self._whole_written(written)
        else:
            written.add_done_callback(self._whole_written)
        return True

    def _whole_written(self, written: asyncio.Future[None]) -> None:
        written.exception()  # a client gone mid-write: finishing closes the connection
        self._finish_response()

    def _range_of(self, asset: Asset) -> tuple[int, int] | None:
        """The byte range to send, None for the whole file; ValueError: unsatisfiable."""
        if_range = self.headers.get("If-Range")
        # If-Range needs a strong validator (RFC 9110 §13.1.5); the ETag is weak, so only an
        # exact Last-Modified date keeps the range.
        if if_range is not None and if_range.strip() != asset.last_modified:
            return None
        return byte_range(self.headers["Range"], len(asset.identity.body))

    # -- the gateway's own answers ------------------------------------------------------------

    def _answer(self, status: int, title: str, detail: str, retry_after: int | None = None) -> None:
        """Answer with a small error body (and, with a body still unread, close afterwards)."""
        if self._answered or self._client_gone:
            return
        self._answered = True
        self.status = status
        content_type, body = error_page(
            status, title, detail, retry_after, self.headers.get("Accept", "")
        )
        out = httputil.HTTPHeaders()
        out["Content-Type"] = content_type
        out["Content-Length"] = str(len(body))
        out["Cache-Control"] = "no-store"
        out["Date"] = email.utils.formatdate(usegmt=True)
        if not self._request_read:
            # Answered before the request was read: Tornado closes the connection afterwards
            # instead of reading a body nobody wants; a keep-alive client must know.
            out["Connection"] = "close"
            self._linger()
        if retry_after is not None:
            out["Retry-After"] = str(retry_after)
        sent = body if self.method != "HEAD" else b""
        self._bytes_out = len(sent)
        self.client.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "")), out, sent
        )
        self._finish_response()

    def _answer_unavailable(self) -> None:
        retry = self.s.upstream.retry_after()
        status = self.s.upstream.status()
        detail = (
            "The application server failed to start; the gateway has given up restarting it."
            if status == "failed"
            else f"The application server is {status}; try again in {retry} s."
        )
        self._answer(503, "Service Unavailable", detail, retry)

    async def _upstream_unreachable(self, reason: str) -> None:
        # A child that just died is refused before the supervisor has seen it exit; give the
        # supervisor a moment, so a restart is answered with 503 + Retry-After, not 502.
        await asyncio.sleep(0.05)
        if self.s.upstream.target() is None:
            self._answer_unavailable()
            return
        log.warning("upstream unreachable for %s %s: %s", self.method, self.uri, reason)
        self._answer(502, "Bad Gateway", "The application server did not answer.")

    def _linger(self) -> None:
        """Ask the client's stream to close lingering (see ClientStream.close_fd)."""
        if self._has_body and isinstance(self.client.stream, ClientStream):
            self.client.stream.linger_on_close = True

    def _too_large(self) -> str:
        return f"Request bodies are limited to {self.s.max_body_size} bytes."

    def _abort_client(self) -> None:
        """Cut the client connection mid-response (and still log the request)."""
        self._responded = True
        self.client.close()
        self._log_access()

    def _log_access(self) -> None:
        """The request is over (answered, cut or abandoned): count it, log it, once."""
        if self._logged:
            return
        self._logged = True
        self.s.in_flight -= 1
        seconds = time.perf_counter() - self.started
        if self.s.observer is not None:
            kind = (
                "static"
                if self._asset is not None
                else "cached"
                if self._cached is not None
                else "proxied"
            )
            self.s.observer.response(kind, self.status or 499, self._upstream_seconds)
        if self.s.access_log:
            log_access(
                self.method,
                self.uri,
                self.status or 499,
                self._bytes_out,
                self.s.forwarding.client_ip(
                    getattr(self.client.context, "remote_ip", "-"), self.headers
                ),
                seconds,
            )


def _not_modified_since(header: str | None, last_modified: str) -> bool:
    if not header:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
        return email.utils.parsedate_to_datetime(last_modified) <= since
    except (TypeError, ValueError):
        return False
