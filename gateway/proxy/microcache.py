"""The micro-cache (sans-I/O): complete responses Next.js marks as shared-cacheable, kept for a
few seconds to minutes and answered without asking Next again. Opt-in (``proxy.micro_cache``).

What is stored, RFC 9111 for a shared cache, narrowed (:func:`freshness`):

- a complete ``200`` to a ``GET`` (a ``HEAD`` is answered from the ``GET`` entry, never stored);
- whose ``Cache-Control`` has ``s-maxage`` > 0, or ``public`` and ``max-age`` > 0, and none of
  ``private``, ``no-store``, ``no-cache`` (with or without field names: not stored at all);
- without ``Set-Cookie`` and without ``Vary: *``;
- whose body is at most ``max_object_size`` (a stream longer than that passes through).

A request with ``Authorization`` may be answered from, and its response stored in, the cache:
RFC 9111 §3.5 allows it when the response has ``public`` or ``s-maxage``, which every entry has.

The key (:class:`MicroCache`) is the request target (path and query, the same for ``GET`` and
``HEAD``) and the values of the request headers the response's ``Vary`` names, as they were
sent to Next: Next sends ``Vary: rsc, next-router-state-tree, next-router-prefetch,
next-router-segment-prefetch, Accept-Encoding``, so an RSC payload and the HTML of one URL are
two entries, and since the gateway asks Next for identity bodies (compression.py) the
``Accept-Encoding`` it varies on is always ``identity``: one entry per page, compressed per
client on the way out.

Freshness: ``min(s-maxage (or max-age) - Age, max_ttl)`` from the moment stored. After that,
within ``stale-while-revalidate`` (also capped at ``max_ttl``, and never with
``must-revalidate`` / ``proxy-revalidate``), the stale entry is served while one background
request refreshes it (:meth:`MicroCache.begin_refresh`); past that it is a miss. Concurrent
misses for one key are not collapsed: each goes to Next (as without the cache) and the last
complete response is kept.

A purge (:meth:`MicroCache.purge`) drops entries by exact path (every query and ``Vary``
variant of it, RSC payloads included), by path prefix, or all; and a response whose request
began before a purge is not stored (:attr:`MicroCache.generation`), so a page rendered before
``revalidatePath`` cannot come back after the purge.

Nothing here imports Tornado: the handler (handler.py) moves the bytes.
"""

from __future__ import annotations

import collections
import email.utils
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from gateway.proxy.compression import etag_matches, merge_vary, variant_etag

HEADER = "X-Gateway-Cache"
HIT, STALE, MISS = "HIT", "STALE", "MISS"

# Not kept with an entry: regenerated per response (Date, Age, our own header), framing that is
# per hop or recomputed (Content-Length), and what would make it unstorable anyway.
_NOT_STORED = frozenset(
    {
        "date",
        "age",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "x-gateway-cache",
    }
)
# What a 304 carries of the 200 it stands for (RFC 9110 §15.4.5), and Last-Modified.
_NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "etag", "expires", "vary", "last-modified"}
)
# What an entry costs besides its body and fields (the OrderedDict node, the Entry and its
# tuples; sys.getsizeof on CPython 3.11-3.13 gives ~700 bytes, rounded up).
ENTRY_OVERHEAD = 1024
_MAX_PURGE_PATHS = 1000


class _Headers(Protocol):
    """What is read of a response head (Tornado's HTTPHeaders, :class:`Fields`)."""

    def get(self, name: str, /) -> str | None: ...

    def get_list(self, name: str) -> list[str]: ...

    def __contains__(self, name: object, /) -> bool: ...


# -- Cache-Control --------------------------------------------------------------------------


def cache_directives(values: Iterable[str]) -> dict[str, str | None] | None:
    """``Cache-Control`` fields -> ``{directive: argument or None}`` (names lower-case, quotes
    removed), RFC 9111 §5.2. None when a directive is repeated with another argument (§4.2.1:
    conflicting directives; such a response is not stored)."""
    out: dict[str, str | None] = {}
    for value in values:
        i, n = 0, len(value)
        while i < n:
            while i < n and value[i] in " \t,":
                i += 1
            start = i
            while i < n and value[i] not in "=,":
                i += 1
            name = value[start:i].strip().lower()
            arg: str | None = None
            if i < n and value[i] == "=":
                i += 1
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] == '"':  # a quoted-string may hold commas
                    i += 1
                    chars = []
                    while i < n and value[i] != '"':
                        if value[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(value[i])
                        i += 1
                    i += 1
                    arg = "".join(chars)
                    while i < n and value[i] != ",":
                        i += 1
                else:
                    start = i
                    while i < n and value[i] != ",":
                        i += 1
                    arg = value[start:i].strip()
            if not name:
                continue
            if name in out and out[name] != arg:
                return None
            out[name] = arg
    return out


def _seconds(arg: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 §1.2.2), else None."""
    if arg is None or not arg.isdigit():
        return None
    return int(arg)


@dataclass(frozen=True)
class Freshness:
    """How long a stored response may be served."""

    fresh: float
    """Seconds from now it is fresh: ``min(s-maxage (or max-age) - Age, max_ttl)``."""
    stale: float
    """Seconds after that a stale copy may be served while one request refreshes it."""
    age: int
    """Next's ``Age`` when it arrived (0 without one)."""


def freshness(method: str, status: int, headers: _Headers, max_ttl: float) -> Freshness | None:
    """Whether a response from Next may be stored, and for how long; None: it may not."""
    if method != "GET" or status != 200 or max_ttl <= 0:
        return None
    if "Set-Cookie" in headers or "Content-Range" in headers:
        return None
    if any(name == "*" for name in vary_names(headers)):
        return None  # RFC 9111 §4.1: matches no request
    cc = cache_directives(headers.get_list("Cache-Control"))
    if cc is None or "private" in cc or "no-store" in cc or "no-cache" in cc:
        return None
    lifetime = _seconds(cc.get("s-maxage"))
    if lifetime is None and "s-maxage" in cc:
        return None  # malformed: do not guess
    if lifetime is None and "public" in cc:
        lifetime = _seconds(cc.get("max-age"))
    if not lifetime:
        return None  # no explicit shared lifetime (heuristic freshness is not used)
    age = _seconds(headers.get("Age")) or 0
    fresh = min(lifetime - age, max_ttl)
    if fresh <= 0:
        return None
    stale = 0.0
    swr = _seconds(cc.get("stale-while-revalidate"))
    # RFC 5861 §3 grants serving stale while refreshing; must-revalidate and proxy-revalidate
    # forbid any stale answer (RFC 9111 §5.2.2.2, §5.2.2.8), whatever else the response says.
    if swr and "must-revalidate" not in cc and "proxy-revalidate" not in cc:
        stale = float(min(swr, max_ttl))
    return Freshness(float(fresh), stale, age)


def vary_names(headers: _Headers) -> tuple[str, ...]:
    """The lower-case field names of ``Vary``, in order, each once."""
    names: dict[str, None] = {}
    for value in headers.get_list("Vary"):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names[token] = None
    return tuple(names)


# -- entries --------------------------------------------------------------------------------


class Fields:
    """A stored response's fields, read like a response head (compression's policy reads it)."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self.pairs = pairs
        self._lower = [(name.lower(), value) for name, value in pairs]

    def get(self, name: str, /) -> str | None:
        values = self.get_list(name)
        return ", ".join(values) if values else None

    def get_list(self, name: str) -> list[str]:
        key = name.lower()
        return [value for n, value in self._lower if n == key]

    def __contains__(self, name: object, /) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._lower)


Key = tuple[str, tuple[str, ...]]
"""(request target, the values of the request headers ``Vary`` names, in its order)."""

_tokens = itertools.count(1)


@dataclass(eq=False)
class Entry:
    """One stored response. Its body is immutable: compressed copies of it can be kept under
    :attr:`body_tag` (compression.py's cache) for as long as the entry lives."""

    url: str
    path: str
    key: Key
    fields: Fields
    body: bytes
    stored_at: float
    fresh_until: float
    stale_until: float
    upstream_age: int
    compressible: bool = False
    """The gateway compresses this body for clients that accept it (set by the handler)."""
    vary_encoding: bool = False
    """The answer depends on ``Accept-Encoding`` (listed in ``Vary`` by the handler's policy)."""
    refreshing: bool = False
    token: str = field(default_factory=lambda: f'"mc-{next(_tokens)}"')
    _heads: dict[tuple[str | None, int], tuple[tuple[str, str], ...]] = field(
        default_factory=dict, repr=False
    )

    @property
    def etag(self) -> str | None:
        return self.fields.get("ETag")

    @property
    def body_tag(self) -> str:
        """What names this body in the cache of compressed bodies: Next's strong ETag (shared
        with the proxy path's own entries for the page), else a token of this entry."""
        etag = self.etag
        if etag is not None and etag.startswith('"') and len(etag) <= 200:
            return etag
        return self.token

    def age(self, now: float) -> int:
        return self.upstream_age + int(now - self.stored_at)

    def response_fields(self, coding: str | None, length: int) -> tuple[tuple[str, str], ...]:
        """The fields of a 200 carrying the body in ``coding`` (None: as stored), ``length``
        bytes long; without Date, Age and :data:`HEADER`, which are per response. Built once
        per coding."""
        built = self._heads.get((coding, length))
        if built is not None:
            return built
        out: list[tuple[str, str]] = []
        for name, value in self.fields.pairs:
            lower = name.lower()
            if lower == "vary" and self.vary_encoding:
                continue  # merged below
            if coding is not None and lower == "accept-ranges":
                continue  # a range would be of the identity bytes (as handler._shape does)
            if coding is not None and lower == "etag":
                variant = variant_etag(value, coding)
                if variant is not None:
                    out.append((name, variant))
                continue
            out.append((name, value))
        if self.vary_encoding:
            merged = merge_vary(self.fields.get_list("Vary"))
            out.append(("Vary", merged or ", ".join(self.fields.get_list("Vary"))))
        if coding is not None:
            out.append(("Content-Encoding", coding))
        out.append(("Content-Length", str(length)))
        built = self._heads[(coding, length)] = tuple(out)
        return built

    def not_modified_fields(self, coding: str | None) -> list[tuple[str, str]]:
        """The fields of a 304 for the representation in ``coding``."""
        return [
            (name, value)
            for name, value in self.response_fields(coding, 0)
            if name.lower() in _NOT_MODIFIED_FIELDS
        ]

    def not_modified(
        self, coding: str | None, if_none_match: str | None, since: str | None
    ) -> bool:
        """Whether a conditional GET/HEAD is answered 304 from this entry (RFC 9110 §13.2.2:
        ``If-None-Match`` first, weak comparison against the ETag of the representation sent;
        ``If-Modified-Since`` only without it)."""
        if if_none_match is not None:
            etag = self.etag
            if etag is None:
                return False
            if coding is not None:
                etag = variant_etag(etag, coding)
            return etag is not None and etag_matches(if_none_match, [etag])
        last_modified = self.fields.get("Last-Modified")
        if not since or not last_modified:
            return False
        try:
            return email.utils.parsedate_to_datetime(
                last_modified
            ) <= email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False


def head_bytes(status_line: str, pairs: Iterable[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 200 OK`` and fields, CRLF after each (no blank line: see
    client_stream.write_whole_response)."""
    lines = [status_line, *(f"{name}: {value}" for name, value in pairs)]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


# -- purges ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Purge:
    """What a purge drops: exact paths (with every query and variant), a path prefix, or all."""

    paths: tuple[str, ...] = ()
    prefix: str | None = None
    everything: bool = False

    @classmethod
    def parse(cls, params: dict[str, Any]) -> Purge:
        """``{"paths": [...]}``, ``{"prefix": "/blog/"}`` or ``{"all": true}``: exactly one.
        ValueError says what is wrong."""
        given = [name for name in ("paths", "prefix", "all") if name in params]
        if len(given) != 1:
            raise ValueError("give exactly one of paths, prefix, all")
        if "all" in params:
            if params["all"] is not True:
                raise ValueError("all must be true")
            return cls(everything=True)
        if "prefix" in params:
            prefix = params["prefix"]
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError("prefix must be a path starting with /")
            return cls(prefix=_normal_path(prefix))
        paths = params["paths"]
        if not isinstance(paths, list) or not paths or len(paths) > _MAX_PURGE_PATHS:
            raise ValueError(f"paths must be a list of 1 to {_MAX_PURGE_PATHS} paths")
        if not all(isinstance(p, str) and p.startswith("/") for p in paths):
            raise ValueError("paths must be strings starting with /")
        return cls(paths=tuple(_normal_path(p) for p in paths))

    def as_params(self) -> dict[str, Any]:
        """The inverse of :meth:`parse` (what goes to the other processes)."""
        if self.everything:
            return {"all": True}
        if self.prefix is not None:
            return {"prefix": self.prefix}
        return {"paths": list(self.paths)}


def _normal_path(target: str) -> str:
    """The path of a request target, percent-decoded: ``/blog/a%20b?x=1`` -> ``/blog/a b``
    (Next's ``revalidatePath`` is given decoded paths; requests arrive encoded)."""
    return unquote(target.split("?", 1)[0])


# -- the cache ------------------------------------------------------------------------------


class MicroCache:
    """Entries by :data:`Key`, least recently used evicted first, bounded by bytes: :attr:`size`
    (bodies, fields, keys and :data:`ENTRY_OVERHEAD` each) never exceeds :attr:`max_bytes`.
    One per process; a purge reaches the others through the engine (app.py)."""

    def __init__(
        self,
        max_bytes: int,
        max_object_size: int,
        max_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object_size = max_object_size
        self.max_ttl = max_ttl
        self.clock = clock
        self.size = 0
        self.generation = 0
        """Bumped by every purge: a response whose request began before it is not stored."""
        self.stats: collections.Counter[str] = collections.Counter()
        self._entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        self._vary: dict[str, tuple[str, ...]] = {}  # URL -> the Vary names of its entries
        self._by_path: dict[str, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Key]:
        """Least recently used first."""
        return list(self._entries)

    def lookup(self, url: str, request_value: Callable[[str], str]) -> tuple[Entry, str] | None:
        """The entry for this request and :data:`HIT` or :data:`STALE`; None: a miss.
        ``request_value(name)`` is the value of a request header as Next would get it ("" when
        absent). A stale entry should be refreshed (:meth:`begin_refresh`)."""
        names = self._vary.get(url)
        entry = None
        if names is not None:
            entry = self._entries.get((url, tuple(request_value(n) for n in names)))
        if entry is None:
            self.stats["misses"] += 1
            return None
        now = self.clock()
        if now < entry.fresh_until:
            state = HIT
        elif now < entry.stale_until:
            state = STALE
        else:
            self._remove(entry.key)
            self.stats["misses"] += 1
            return None
        self._entries.move_to_end(entry.key)
        self.stats["hits" if state == HIT else "stale"] += 1
        return entry, state

    def begin_refresh(self, entry: Entry) -> bool:
        """True when the caller is to refresh this stale entry: the first to ask, as long as
        the entry is still the one stored. Call :meth:`end_refresh` when it is over."""
        if entry.refreshing or self._entries.get(entry.key) is not entry:
            return False
        entry.refreshing = True
        return True

    def end_refresh(self, entry: Entry) -> None:
        entry.refreshing = False

    def discard(self, entry: Entry) -> None:
        """Drop this entry, if it is still the one stored under its key."""
        if self._entries.get(entry.key) is entry:
            self._remove(entry.key)

    def store(
        self,
        url: str,
        request_value: Callable[[str], str],
        fields: Iterable[tuple[str, str]],
        body: bytes,
        fresh: Freshness,
        generation: int,
    ) -> Entry | None:
        """Keep a complete response that :func:`freshness` allowed; None when it is not kept
        (too large, or a purge happened since its request began: ``generation`` is the value
        of :attr:`generation` then)."""
        if generation != self.generation or len(body) > self.max_object_size:
            return None
        kept = Fields(tuple((n, v) for n, v in fields if n.lower() not in _NOT_STORED))
        names = vary_names(kept)
        key: Key = (url, tuple(request_value(n) for n in names))
        now = self.clock()
        entry = Entry(
            url=url,
            path=_normal_path(url),
            key=key,
            fields=kept,
            body=body,
            stored_at=now,
            fresh_until=now + fresh.fresh,
            stale_until=now + fresh.fresh + fresh.stale,
            upstream_age=fresh.age,
        )
        cost = self.cost(entry)
        if cost > self.max_bytes:
            return None
        if self._vary.get(url, names) != names:
            # The page now varies on other headers: its entries under the old ones could be
            # found by no request, or by the wrong one.
            for old in [k for k in self._by_path.get(entry.path, ()) if k[0] == url]:
                self._remove(old)
        self._remove(key)
        while self._entries and self.size + cost > self.max_bytes:
            self._remove(next(iter(self._entries)))
            self.stats["evicted"] += 1
        self._entries[key] = entry
        self._vary[url] = names
        self._by_path.setdefault(entry.path, set()).add(key)
        self.size += cost
        self.stats["stored"] += 1
        return entry

    @staticmethod
    def cost(entry: Entry) -> int:
        key_bytes = len(entry.url) + sum(len(v) for v in entry.key[1])
        field_bytes = sum(len(n) + len(v) for n, v in entry.fields.pairs)
        return len(entry.body) + key_bytes + field_bytes + ENTRY_OVERHEAD

    def purge(self, what: Purge) -> int:
        """Drop what ``what`` names; the number of entries dropped. Responses already on their
        way from Next are not stored (:attr:`generation`)."""
        self.generation += 1
        if what.everything:
            keys = list(self._entries)
        elif what.prefix is not None:
            prefix = what.prefix
            keys = [k for path, ks in self._by_path.items() if path.startswith(prefix) for k in ks]
        else:
            keys = [k for path in what.paths for k in self._by_path.get(path, ())]
        for key in keys:
            self._remove(key)
        self.stats["purged"] += len(keys)
        return len(keys)

    def _remove(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.size -= self.cost(entry)
        keys = self._by_path.get(entry.path)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[entry.path]
        if not any(k[0] == entry.url for k in self._by_path.get(entry.path, ())):
            self._vary.pop(entry.url, None)

    def snapshot(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self.size,
            "max_bytes": self.max_bytes,
            **{name: self.stats[name] for name in ("hits", "stale", "misses", "stored", "purged")},
        }
