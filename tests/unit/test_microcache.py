"""The micro-cache's rules without sockets (gateway/proxy/microcache.py): what may be stored,
Vary keying, freshness and Age, stale-while-revalidate with one refresh, the byte bound and
LRU order, the object size limit, 304s from an entry, purges; and the cache_purge API method
reaching every process through the engine (app.CachePurges over a memory-engine Node)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.app import CachePurges, micro_cache_of
from gateway.config import ConfigError, GatewayConfig, RealtimeConfig, load_config
from gateway.proxy.compression import variant_etag
from gateway.proxy.microcache import (
    ENTRY_OVERHEAD,
    HIT,
    STALE,
    Fields,
    Freshness,
    MicroCache,
    Purge,
    cache_directives,
    freshness,
    head_bytes,
)
from gateway.realtime.api import ServerApi
from gateway.realtime.auth import TokenVerifier, VerifierSettings
from gateway.realtime.codes import ErrorReply
from gateway.realtime.memory import MemoryBroker, MemoryPresence
from gateway.realtime.node import Node

NEXT_VARY = "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch"


def fields(*pairs: tuple[str, str]) -> Fields:
    return Fields(tuple(pairs))


def cc(value: str, *more: tuple[str, str]) -> Fields:
    return fields(("Cache-Control", value), *more)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_headers(name: str) -> str:
    return ""


def request(**values: str) -> Any:
    """A request's field values as Next gets them (lower-case names)."""
    return lambda name: values.get(name.replace("-", "_"), "")


FRESH = Freshness(60.0, 0.0, 0)


def cache(
    max_bytes: int = 1 << 20, max_object_size: int = 1 << 16, ttl: float = 60.0
) -> MicroCache:
    return MicroCache(max_bytes, max_object_size, ttl, clock=Clock())


# -- what may be stored ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "extra", "fresh"),
    [
        ("s-maxage=31536000", (), 60.0),  # Next's prerendered page: capped by max_ttl
        ("s-maxage=10", (), 10.0),
        ("s-maxage=10, stale-while-revalidate=30", (), 10.0),
        ("public, max-age=20", (), 20.0),
        ("public, s-maxage=5, max-age=100", (), 5.0),  # s-maxage wins for a shared cache
        ("S-MaxAge=7", (), 7.0),  # directive names are case-insensitive
        ('s-maxage="9"', (), 9.0),  # RFC 9111 §5.2: recipients accept the quoted form too
        ("max-age=60", (), None),  # not public, no s-maxage: private caches only
        ("public", (), None),  # no explicit lifetime: heuristics are not used
        ("s-maxage=0", (), None),
        ("s-maxage=abc", (), None),
        ("s-maxage=10, private", (), None),
        ('s-maxage=10, private="Set-Cookie"', (), None),
        ("s-maxage=10, no-store", (), None),
        ("s-maxage=10, no-cache", (), None),
        ('s-maxage=10, no-cache="X-A, X-B"', (), None),
        ("private, no-cache, no-store, max-age=0, must-revalidate", (), None),  # Next, dynamic
        ("s-maxage=10, s-maxage=20", (), None),  # conflicting: not stored
        ("s-maxage=10", (("Set-Cookie", "a=1"),), None),
        ("s-maxage=10", (("Vary", "*"),), None),
        ("s-maxage=10", (("Vary", "Accept, *"),), None),
        ("s-maxage=10", (("Age", "4"),), 6.0),  # already 4 s old at Next
        ("s-maxage=10", (("Age", "10"),), None),  # stale on arrival
        ("s-maxage=10", (("Content-Range", "bytes 0-1/10"),), None),
    ],
)
def test_storable_responses(
    cache_control: str, extra: tuple[tuple[str, str], ...], fresh: float | None
) -> None:
    got = freshness("GET", 200, cc(cache_control, *extra), 60.0)
    assert (got.fresh if got is not None else None) == fresh


@pytest.mark.parametrize(
    ("method", "status"),
    [("HEAD", 200), ("POST", 200), ("GET", 404), ("GET", 206), ("GET", 304), ("GET", 301)],
)
def test_only_get_200_is_stored(method: str, status: int) -> None:
    assert freshness(method, status, cc("s-maxage=10"), 60.0) is None


def test_stale_while_revalidate_is_capped_and_refused_with_must_revalidate() -> None:
    got = freshness("GET", 200, cc("s-maxage=10, stale-while-revalidate=31535990"), 60.0)
    assert got == Freshness(10.0, 60.0, 0)
    for refusal in ("must-revalidate", "proxy-revalidate"):
        got = freshness("GET", 200, cc(f"s-maxage=10, stale-while-revalidate=5, {refusal}"), 60)
        assert got == Freshness(10.0, 0.0, 0)


def test_cache_control_parsing_keeps_quoted_commas_together() -> None:
    assert cache_directives(['public, no-cache="a, b", max-age=5']) == {
        "public": None,
        "no-cache": "a, b",
        "max-age": "5",
    }
    assert cache_directives(["max-age=5", "MAX-AGE=5"]) == {"max-age": "5"}  # same: fine
    assert cache_directives(["max-age=5", "max-age=6"]) is None


# -- keys -----------------------------------------------------------------------------------


def test_the_key_holds_the_values_of_the_request_headers_vary_names() -> None:
    c = cache()
    vary = ("Vary", f"{NEXT_VARY}, Accept-Encoding")
    html = c.store("/about", request(accept_encoding="identity"), [vary], b"<html>", FRESH, 0)
    rsc = c.store(
        "/about", request(rsc="1", accept_encoding="identity"), [vary], b"0:rsc", FRESH, 0
    )
    assert html is not None and rsc is not None and len(c) == 2
    found = c.lookup("/about", request(accept_encoding="identity"))
    assert found is not None and found[0].body == b"<html>"
    found = c.lookup("/about", request(rsc="1", accept_encoding="identity"))
    assert found is not None and found[0].body == b"0:rsc"
    assert c.lookup("/about", request(rsc="1", next_router_prefetch="1")) is None
    assert c.lookup("/about?x=1", request(accept_encoding="identity")) is None  # the query counts


def test_header_values_not_named_in_vary_do_not_split_entries() -> None:
    c = cache()
    c.store("/a", request(cookie="one"), [("Cache-Control", "s-maxage=9")], b"x", FRESH, 0)
    found = c.lookup("/a", request(cookie="two", authorization="Bearer x"))
    assert found is not None and found[1] == HIT


def test_a_page_that_changes_its_vary_drops_its_old_variants() -> None:
    c = cache()
    c.store("/p", request(rsc="1"), [("Vary", "RSC")], b"rsc", FRESH, 0)
    c.store("/p", request(rsc=""), [("Vary", "RSC")], b"html", FRESH, 0)
    c.store("/p", request(accept="text/html"), [("Vary", "Accept")], b"new", FRESH, 0)
    assert len(c) == 1
    assert c.lookup("/p", request(rsc="1")) is None
    found = c.lookup("/p", request(accept="text/html"))
    assert found is not None and found[0].body == b"new"


def test_fields_that_are_per_response_are_not_stored() -> None:
    c = cache()
    entry = c.store(
        "/a",
        no_headers,
        [
            ("Date", "x"),
            ("Age", "3"),
            ("Content-Length", "1"),
            ("X-Gateway-Cache", "HIT"),
            ("Content-Type", "text/html"),
            ("X-Nextjs-Prerender", "1"),
            ("X-Nextjs-Prerender", "1"),
        ],
        b"x",
        FRESH,
        0,
    )
    assert entry is not None
    assert entry.fields.pairs == (
        ("Content-Type", "text/html"),
        ("X-Nextjs-Prerender", "1"),
        ("X-Nextjs-Prerender", "1"),
    )


# -- freshness, Age, stale-while-revalidate ---------------------------------------------------


def test_an_entry_is_fresh_then_stale_then_gone_and_age_counts_from_next() -> None:
    c = cache()
    clock = c.clock
    assert isinstance(clock, Clock)
    entry = c.store("/a", no_headers, [], b"x", Freshness(10.0, 5.0, 3), 0)
    assert entry is not None and entry.age(clock.now) == 3
    clock.now += 9.5
    assert c.lookup("/a", no_headers) == (entry, HIT)
    assert entry.age(clock.now) == 12
    clock.now += 1
    assert c.lookup("/a", no_headers) == (entry, STALE)
    clock.now += 5
    assert c.lookup("/a", no_headers) is None  # past the stale window: a miss, and dropped
    assert len(c) == 0 and c.size == 0


def test_a_stale_entry_is_refreshed_by_one_request_at_a_time() -> None:
    c = cache()
    entry = c.store("/a", no_headers, [], b"x", Freshness(1.0, 30.0, 0), 0)
    assert entry is not None
    c.clock.now += 2  # type: ignore[attr-defined]
    assert c.lookup("/a", no_headers) == (entry, STALE)
    assert c.begin_refresh(entry) is True
    assert c.begin_refresh(entry) is False  # the others get the stale entry, no request
    assert c.begin_refresh(entry) is False
    c.end_refresh(entry)
    assert c.begin_refresh(entry) is True  # the refresh failed: the next one may try
    newer = c.store("/a", no_headers, [], b"y", FRESH, 0)
    assert newer is not None
    assert c.begin_refresh(entry) is False  # replaced: nothing left to refresh
    c.discard(entry)  # not the stored one any more: the newer entry stays
    assert c.lookup("/a", no_headers) == (newer, HIT)


# -- bounds ---------------------------------------------------------------------------------


def test_the_cache_never_holds_more_than_max_bytes_and_evicts_the_least_recently_used() -> None:
    body = b"x" * 1000
    per_entry = len(body) + len("/p0") + ENTRY_OVERHEAD
    c = cache(max_bytes=3 * per_entry + 10)
    for i in range(3):
        assert c.store(f"/p{i}", no_headers, [], body, FRESH, 0) is not None
    assert c.size == 3 * per_entry
    assert c.lookup("/p0", no_headers) is not None  # /p1 is now the least recently used
    c.store("/p3", no_headers, [], body, FRESH, 0)
    assert [url for url, _ in c.keys()] == ["/p2", "/p0", "/p3"]
    assert c.size <= c.max_bytes
    for i in range(4, 40):
        c.store(f"/p{i}", no_headers, [], body, FRESH, 0)
        assert c.size <= c.max_bytes
    assert c.size == sum(MicroCache.cost(c.lookup(url, no_headers)[0]) for url, _ in c.keys())  # type: ignore[index]


def test_bodies_over_the_object_size_or_the_whole_cache_are_not_stored() -> None:
    c = cache(max_bytes=1 << 20, max_object_size=100)
    assert c.store("/a", no_headers, [], b"x" * 100, FRESH, 0) is not None
    assert c.store("/b", no_headers, [], b"x" * 101, FRESH, 0) is None
    small = cache(max_bytes=ENTRY_OVERHEAD + 50, max_object_size=1000)
    assert small.store("/c", no_headers, [], b"x" * 500, FRESH, 0) is None
    assert len(small) == 0


# -- 304s from an entry -----------------------------------------------------------------------


def test_conditional_requests_are_answered_from_the_representation_sent() -> None:
    c = cache()
    entry = c.store(
        "/a",
        no_headers,
        [("ETag", '"abc"'), ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")],
        b"x",
        FRESH,
        0,
    )
    assert entry is not None
    assert entry.not_modified(None, '"abc"', None)
    assert entry.not_modified(None, 'W/"abc"', None)  # weak comparison
    assert entry.not_modified(None, '"zzz", "abc"', None)
    assert entry.not_modified(None, "*", None)
    assert not entry.not_modified(None, '"abc-br"', None)
    assert entry.not_modified("br", '"abc-br"', None)  # the brotli variant's own tag
    assert not entry.not_modified("br", '"abc"', None)  # the identity tag is another body
    # If-Modified-Since only without If-None-Match (RFC 9110 §13.2.2).
    assert entry.not_modified(None, None, "Tue, 01 Dec 2026 10:00:00 GMT")
    assert entry.not_modified(None, None, "Wed, 02 Dec 2026 10:00:00 GMT")
    assert not entry.not_modified(None, None, "Mon, 30 Nov 2026 10:00:00 GMT")
    assert not entry.not_modified(None, '"other"', "Wed, 02 Dec 2026 10:00:00 GMT")
    assert not entry.not_modified(None, None, "not a date")


def test_a_304_carries_the_validators_and_caching_fields_of_its_variant() -> None:
    c = cache()
    entry = c.store(
        "/a",
        no_headers,
        [
            ("Cache-Control", "s-maxage=60"),
            ("ETag", '"abc"'),
            ("Content-Type", "text/html"),
            ("Vary", "RSC"),
            ("X-Nextjs-Cache", "HIT"),
        ],
        b"x" * 2000,
        FRESH,
        0,
    )
    assert entry is not None
    entry.compressible, entry.vary_encoding = True, True
    assert entry.not_modified_fields("gzip") == [
        ("Cache-Control", "s-maxage=60"),
        ("ETag", variant_etag('"abc"', "gzip")),
        ("Vary", "RSC, Accept-Encoding"),
    ]
    full = dict(entry.response_fields("br", 700))
    assert full["Content-Encoding"] == "br" and full["Content-Length"] == "700"
    assert full["ETag"] == '"abc-br"' and full["Vary"] == "RSC, Accept-Encoding"
    head = head_bytes("HTTP/1.1 200 OK", entry.response_fields(None, 2000))
    assert head.startswith(b"HTTP/1.1 200 OK\r\nCache-Control: s-maxage=60\r\n")
    assert head.endswith(b"Content-Length: 2000\r\n")
    assert b'ETag: "abc"\r\n' in head


# -- purges ---------------------------------------------------------------------------------


def filled() -> MicroCache:
    c = cache()
    vary = [("Vary", "RSC")]
    for url in ("/notes", "/notes?_rsc=1", "/notes/1", "/blog/a", "/blog/b%20c", "/"):
        c.store(url, request(), vary, b"html", FRESH, 0)
        c.store(url, request(rsc="1"), vary, b"rsc", FRESH, 0)
    return c


def test_purging_a_path_drops_its_queries_and_variants_only() -> None:
    c = filled()
    assert c.purge(Purge.parse({"paths": ["/notes"]})) == 4  # HTML and RSC of two URLs
    assert c.lookup("/notes", request()) is None
    assert c.lookup("/notes?_rsc=1", request(rsc="1")) is None
    assert c.lookup("/notes/1", request()) is not None
    assert c.purge(Purge.parse({"paths": ["/blog/b c", "/nothing"]})) == 2  # decoded paths
    assert c.purge(Purge.parse({"prefix": "/blog/"})) == 2
    assert c.purge(Purge.parse({"all": True})) == 4
    assert len(c) == 0 and c.size == 0


def test_a_response_whose_request_began_before_a_purge_is_not_stored() -> None:
    c = cache()
    began = c.generation
    c.purge(Purge.parse({"paths": ["/a"]}))
    assert c.store("/a", no_headers, [], b"rendered before revalidatePath", FRESH, began) is None
    assert c.store("/a", no_headers, [], b"after", FRESH, c.generation) is not None


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"paths": []},
        {"paths": "/a"},
        {"paths": ["a"]},
        {"paths": [1]},
        {"prefix": "blog"},
        {"all": 1},
        {"all": False},
        {"paths": ["/a"], "all": True},
        {"paths": ["/"] * 1001},
    ],
)
def test_bad_purges_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Purge.parse(params)


def test_a_purge_survives_its_trip_between_processes() -> None:
    for params in ({"paths": ["/a", "/b"]}, {"prefix": "/x/"}, {"all": True}):
        assert Purge.parse(Purge.parse(params).as_params()) == Purge.parse(params)


# -- config ---------------------------------------------------------------------------------


def test_the_micro_cache_is_off_by_default() -> None:
    assert GatewayConfig().proxy.micro_cache.enabled is False
    assert micro_cache_of(GatewayConfig()) is None


def test_micro_cache_settings_are_checked(tmp_path: Any) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("proxy:\n  micro_cache:\n    enabled: true\n    max_ttl: 0\n")
    with pytest.raises(ConfigError, match="max_ttl"):
        load_config(str(path), environ={})
    path.write_text("proxy:\n  micro_cache:\n    enabled: true\n    max_bytes: 1048576\n")
    made = micro_cache_of(load_config(str(path), environ={}))
    assert made is not None and made.max_bytes == 1048576 and made.max_ttl == 60.0


# -- the server API's cache_purge, across processes -----------------------------------------


def node_with(purges: CachePurges) -> Node:
    return Node(
        RealtimeConfig(),
        TokenVerifier(VerifierSettings(secret="x" * 40)),
        MemoryBroker(),
        MemoryPresence(),
        control_handlers=purges.control_handlers(),
    )


@pytest.mark.gen_test
async def test_cache_purge_empties_this_process_and_is_sent_to_every_process() -> None:
    c = filled()
    purges = CachePurges(c)
    node = node_with(purges)
    api = ServerApi(node, {CachePurges.TOPIC: purges.api_method(node)})
    assert await api.call("cache_purge", {"paths": ["/notes"]}) == {"purged": 4, "processes": 1}
    await asyncio.sleep(0.01)  # its own message came back and was skipped
    assert len(c) == 8
    # Another process's purge arrives as a control message.
    other = json.dumps({"origin": "elsewhere", "purge": {"prefix": "/blog/"}}).encode()
    node.handle_control(b"a cache_purge\n" + other)
    assert len(c) == 4
    node.handle_control(b"a cache_purge\nnot json")  # logged and dropped
    node.handle_control(b"a unknown\n{}")
    assert len(c) == 4
    with pytest.raises(ErrorReply) as bad:
        await api.call("cache_purge", {"prefix": "nope"})
    assert bad.value.error.code == 107 and "prefix" in bad.value.error.message
    await node.close()


@pytest.mark.gen_test
async def test_cache_purge_with_the_cache_off_purges_nothing() -> None:
    purges = CachePurges(None)
    node = node_with(purges)
    api = ServerApi(node, {CachePurges.TOPIC: purges.api_method(node)})
    assert await api.call("cache_purge", {"all": True}) == {"purged": 0, "processes": 0}
    await node.close()
