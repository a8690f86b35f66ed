"""Compression at the gateway (sans-I/O): which responses, which coding, ETags per coding, the
streaming compressors and the cache of compressed bodies.

The gateway asks Next.js for identity bodies (``Accept-Encoding: identity``: loopback bandwidth
is free, and Next's zlib runs on its one JavaScript thread) and compresses to the client itself:
brotli when accepted, else gzip, per the client's ``Accept-Encoding`` and its q-values.

Left alone (RFC 9110 §7.7: a proxy must not transform a ``no-transform`` message): responses
with ``Cache-Control: no-transform``, with a ``Content-Encoding`` already (never encoded twice),
of a type that does not compress (images, video, fonts in woff/woff2, archives: anything not in
``proxy.compression.types``), bodies under ``min_size``, ``HEAD``, ``1xx``/``204``/``206``/
``304`` and anything with ``Content-Range``.

A streamed response stays streamed: every piece read from Next is compressed and *flushed*
(zlib ``Z_SYNC_FLUSH``, brotli ``flush``), so a Suspense chunk or an SSE event reaches the
browser when it would have without compression, for a few bytes of flush marker each.

A compressed representation is a different representation: it gets its own ETag (``"x"`` ->
``"x-br"``, ``W/"x"`` -> ``W/"x-gzip"``), and an ``If-None-Match`` naming a variant is translated
back to Next's own tag on the way upstream, so 304s keep working (:func:`upstream_if_none_match`,
:func:`not_modified_etag`).

Nothing here imports Tornado: the handler (handler.py) moves the bytes.
"""

from __future__ import annotations

import collections
import fnmatch
import zlib
from dataclasses import dataclass, field
from typing import Protocol

try:
    import brotli
except ImportError:  # optional: gzip only
    brotli = None

# Our order of preference among codings the client accepts equally.
CODINGS: tuple[str, ...] = ("br", "gzip") if brotli is not None else ("gzip",)
# The suffix a coding adds inside an ETag's quotes (Apache's mod_deflate spells gzip the same).
ETAG_SUFFIX = {"br": "-br", "gzip": "-gzip"}
# Statuses whose message carries no body to compress, or a part of one (RFC 9110 §15.3.7).
_UNTOUCHED_STATUS = frozenset({204, 206, 304})
# Brotli window for *streamed* responses, which may stay open for hours (SSE): at quality 5,
# a 64 KiB window (lgwin 16) costs 335 KiB per open stream against 1.3 MiB at the default 4 MiB,
# for 1% more bytes on 400 KB of JavaScript (measured on this machine, brotli 1.2).
_STREAM_LGWIN = 16


def parse_accept_encoding(header: str) -> dict[str, float]:
    """``gzip;q=0.8, br`` -> ``{"gzip": 0.8, "br": 1.0}`` (RFC 9110 §12.5.3).

    A malformed weight counts as 0 (refused): guessing "accepted" could send bytes the client
    cannot read."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if name == "x-gzip":  # RFC 9110 §8.4.1.3: the same coding
            name = "gzip"
        codings[name] = max(q, codings.get(name, 0.0))
    return codings


def negotiate(accept_encoding: str, available: tuple[str, ...] = CODINGS) -> str | None:
    """The coding to send, or None for identity.

    The client's highest weight wins; among equal weights, the order of ``available`` (brotli
    first). A coding the header does not name takes the weight of ``*`` (0 without one). No
    header, or no acceptable coding, is identity, even with ``identity;q=0``: RFC 9110 §12.5.3
    allows answering it with identity rather than 406, and every client reads identity.
    """
    if not accept_encoding:
        return None
    codings = parse_accept_encoding(accept_encoding)
    star = codings.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in available:
        q = codings.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if codings.get("identity", 0.0) > best_q:
        return None  # "identity;q=1, gzip;q=0.5": the client would rather have it as it is
    return best


# -- ETags per coding ---------------------------------------------------------------------------


def variant_etag(etag: str, coding: str) -> str | None:
    """The ETag of the ``coding`` representation: the suffix goes inside the quotes and a weak
    tag stays weak. None for a malformed tag (then the variant is sent without one rather than
    sharing the identity's)."""
    tag = etag.strip()
    if len(tag) < 2 or not tag.endswith('"'):
        return None
    if not (tag.startswith('"') or tag.startswith('W/"')) or tag == 'W/"':
        return None
    return tag[:-1] + ETAG_SUFFIX[coding] + '"'


def _split_tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def etag_matches(if_none_match: str, etags: list[str]) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/"x"`` matches ``"x"``."""
    if if_none_match.strip() == "*":
        return True
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return any(tag.removeprefix("W/") in wanted for tag in etags)


def upstream_if_none_match(header: str) -> str:
    """``If-None-Match`` for Next: each variant tag also as the tag Next gave it.

    The variant is kept as well, in case an app's own tag happens to end like one of ours."""
    out: list[str] = []
    for tag in _split_tags(header):
        out.append(tag)
        for suffix in ETAG_SUFFIX.values():
            if tag.endswith(suffix + '"'):
                out.append(tag[: -len(suffix) - 1] + '"')
                break
    return ", ".join(out)


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def not_modified_etag(upstream_etag: str, if_none_match: str) -> str:
    """The ETag of a 304 from Next: the variant the client named, if it named one of this tag
    (its stored representation is the one being confirmed), else Next's own."""
    wanted = {_opaque(tag) for tag in _split_tags(if_none_match)}
    for coding in ETAG_SUFFIX:
        variant = variant_etag(upstream_etag, coding)
        if variant is not None and _opaque(variant) in wanted:
            return variant
    return upstream_etag


# -- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to do with one response."""

    coding: str | None
    """The coding to apply; None: send the body as Next sent it."""
    vary: bool
    """The answer depends on ``Accept-Encoding``: it must be listed in ``Vary``."""


UNTOUCHED = Plan(None, False)


@dataclass
class CompressionPolicy:
    """Which responses are compressed, and how hard. One per gateway, shared by all requests
    (the defaults are in config.py: ``proxy.compression``)."""

    enabled: bool
    gzip_level: int
    brotli_quality: int
    min_size: int
    types: tuple[str, ...]
    """Lower-case media type patterns (fnmatch: ``text/*``, ``application/*+json``)."""
    _type_memo: dict[str, bool] = field(default_factory=dict, repr=False)

    def compressible_type(self, content_type: str) -> bool:
        """Whether a ``Content-Type`` is worth compressing (memoized: few distinct values)."""
        known = self._type_memo.get(content_type)
        if known is not None:
            return known
        mime = content_type.split(";", 1)[0].strip().lower()
        verdict = bool(mime) and any(fnmatch.fnmatchcase(mime, p) for p in self.types)
        if len(self._type_memo) < 1024:  # a hostile app cannot grow it without bound
            self._type_memo[content_type] = verdict
        return verdict

    def plan(
        self,
        method: str,
        status: int,
        accept_encoding: str,
        headers: _Headers,
        length: int | None,
    ) -> Plan:
        """Decide for one response from Next. ``length``: the body's size when known (its
        ``Content-Length``, or the whole body already read), None while it streams."""
        if not self.enabled or status < 200 or status in _UNTOUCHED_STATUS:
            return UNTOUCHED
        if "Content-Range" in headers:
            return UNTOUCHED
        encoding = headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            return UNTOUCHED  # Next (or the app) compressed it already: never twice
        if not self.compressible_type(headers.get("Content-Type") or ""):
            return UNTOUCHED
        if _no_transform(headers):
            return UNTOUCHED
        if length is not None and length < self.min_size:
            return UNTOUCHED  # compressed or not whatever the client accepts
        if method == "HEAD":
            return Plan(None, True)  # a GET would vary; the HEAD itself is sent as it is
        return Plan(negotiate(accept_encoding), True)


class _Headers(Protocol):
    """What is read of a response head (Tornado's HTTPHeaders, a test's own)."""

    def get(self, name: str, /) -> str | None: ...

    def get_list(self, name: str) -> list[str]: ...

    def __contains__(self, name: object, /) -> bool: ...


def _no_transform(headers: _Headers) -> bool:
    return any(
        token.strip().lower() == "no-transform"
        for value in headers.get_list("Cache-Control")
        for token in value.split(",")
    )


def merge_vary(values: list[str]) -> str | None:
    """The ``Vary`` value with ``Accept-Encoding`` added once, or None when it is already
    covered (listed, in any case, or ``*``)."""
    names = [token.strip() for value in values for token in value.split(",") if token.strip()]
    if any(name == "*" or name.lower() == "accept-encoding" for name in names):
        return None
    return ", ".join([*names, "Accept-Encoding"])


# -- compressors --------------------------------------------------------------------------------


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` and flush: the result decodes to everything given so far."""

    def finish(self) -> bytes:
        """The end of the stream; the compressor is unusable afterwards."""


class _Gzip:
    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip wrapper

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self, quality: int) -> None:
        assert brotli is not None
        self._b = brotli.Compressor(quality=quality, lgwin=_STREAM_LGWIN)

    def compress(self, data: bytes) -> bytes:
        return self._b.process(data) + self._b.flush()  # type: ignore[no-any-return]

    def finish(self) -> bytes:
        return self._b.finish()  # type: ignore[no-any-return]


def stream_compressor(coding: str, policy: CompressionPolicy) -> Compressor:
    """A compressor for a body that arrives in pieces."""
    if coding == "br":
        return _Brotli(policy.brotli_quality)
    return _Gzip(policy.gzip_level)


def compress_whole(coding: str, data: bytes, policy: CompressionPolicy) -> bytes:
    """A body that is all here, in one go (no flush points: the smallest output)."""
    if coding == "br":
        assert brotli is not None
        return brotli.compress(data, quality=policy.brotli_quality)  # type: ignore[no-any-return]
    z = zlib.compressobj(policy.gzip_level, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


# -- the cache of compressed bodies -------------------------------------------------------------

CacheKey = tuple[str, str, str]
"""(URL, coding, Next's strong ETag): a strong ETag names one exact body (RFC 9110 §8.8.1), so
its compressed bytes stay right until the tag changes (a new build, an ISR revalidation)."""

# What an entry costs besides its bytes and key: the OrderedDict node, tuple and bytes headers
# (measured with sys.getsizeof on CPython 3.11-3.13: ~250 bytes; rounded up).
ENTRY_OVERHEAD = 300


def cacheable_etag(method: str, status: int, headers: _Headers) -> str | None:
    """The strong ETag that makes a response's compressed bytes reusable, else None.

    Only complete 200s to GET, and only with a strong tag: a weak one promises equivalence, not
    the same bytes. Next sends one on every prerendered page (``x-nextjs-prerender``), unless
    the app sets ``generateEtags: false``."""
    if method != "GET" or status != 200:
        return None
    etag = headers.get("ETag")
    if etag is None or not etag.startswith('"') or len(etag) > 200:
        return None
    return etag


class CompressedCache:
    """Compressed bodies by :data:`CacheKey`, least recently used evicted first, bounded by
    bytes: :attr:`size` (bodies + keys + :data:`ENTRY_OVERHEAD` each) never exceeds
    :attr:`max_bytes`. One per process; not shared between workers."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[CacheKey, bytes] = collections.OrderedDict()

    @staticmethod
    def cost(key: CacheKey, body: bytes) -> int:
        return len(body) + sum(len(part) for part in key) + ENTRY_OVERHEAD

    def get(self, key: CacheKey) -> bytes | None:
        body = self._entries.get(key)
        if body is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return body

    def put(self, key: CacheKey, body: bytes) -> None:
        cost = self.cost(key, body)
        if cost > self.max_bytes // 4:
            return  # one page must not flush the whole cache
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= self.cost(key, old)
        while self._entries and self.size + cost > self.max_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self.size -= self.cost(evicted_key, evicted)
        self._entries[key] = body
        self.size += cost

    def keys(self) -> list[CacheKey]:
        """Least recently used first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self.size,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }
