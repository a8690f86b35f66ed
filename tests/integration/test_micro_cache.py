"""The micro-cache in a running gateway (docs/proxy.md, "Micro-cache"): against a real
`next start` (a prerendered page and its RSC payload served from memory, dynamic pages and
Server Actions never, purges through the server API, off by default), against the shaped
stand-in (tests/support/shaped_child.py, which counts the requests that reach it) for the
rules the app has no page for, and across `--workers 2` on Redis for the purge."""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import require
from support import codings
from support.procs import ROOT, GatewayProcess, wait_until
from support.redis import redis_available

from integration.test_next_proxy import post_form, server_action_id

SHAPED_CHILD = ROOT / "tests" / "support" / "shaped_child.py"
API_KEY = "micro-cache-api-key"
ENV = {"GATEWAY_API_KEY": API_KEY}
BROWSER = {"Accept-Encoding": "gzip, deflate, br"}
MAX_OBJECT = 64 * 1024


def cache_config(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "max_object_size": MAX_OBJECT, **extra}


def shaped_path(*headers: str, **params: object) -> str:
    """A /shaped URL; ``u`` makes it unique so tests do not share entries."""
    params.setdefault("u", secrets.token_hex(4))
    query = [f"{k}={quote(str(v))}" for k, v in params.items()]
    query += [f"header={quote(h)}" for h in headers]
    return "/shaped?" + "&".join(query)


def child_count(gw: GatewayProcess) -> int:
    state = gw.ready_state()
    assert state is not None
    conn = http.client.HTTPConnection("127.0.0.1", state["next"]["port"], timeout=5)
    try:
        conn.request("GET", "/count")
        return int(json.loads(conn.getresponse().read())["requests"])
    finally:
        conn.close()


def purge(gw: GatewayProcess, **params: Any) -> dict[str, Any]:
    reply = gw.api("cache_purge", API_KEY, **params)
    assert "result" in reply, reply
    return reply["result"]  # type: ignore[no-any-return]


def decode(headers: http.client.HTTPMessage, body: bytes) -> bytes:
    return codings.decode(headers.get("Content-Encoding"), body)


# -- against the shaped stand-in ------------------------------------------------------------


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "next": {"dir": ".", "command": [sys.executable, str(SHAPED_CHILD), "--port", "{port}"]},
        "proxy": {"micro_cache": cache_config()},
    }
    with GatewayProcess(tmp_path_factory.mktemp("shaped-mc"), config, env=ENV) as gw:
        gw.wait_ready()
        yield gw


def test_a_shared_cacheable_response_is_served_from_memory_the_second_time(
    shaped: GatewayProcess,
) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", size=3000, etag='"v1"')
    status, first, body = shaped.request(path)
    assert status == 200 and first["X-Gateway-Cache"] == "MISS" and "Age" not in first
    asked = child_count(shaped)
    for _ in range(3):
        status, again, cached = shaped.request(path)
        assert status == 200 and again["X-Gateway-Cache"] == "HIT"
        assert cached == body
        assert again["X-Child-Request"] == first["X-Child-Request"]
        assert int(again["Age"]) >= 0 and again["Date"]
        assert again["Content-Length"] == str(len(body))
    assert child_count(shaped) == asked  # Next was not asked again


@pytest.mark.parametrize(
    "headers",
    [
        ("Cache-Control: s-maxage=60", "Set-Cookie: session=1"),
        ("Cache-Control: private, s-maxage=60",),
        ("Cache-Control: no-store, s-maxage=60",),
        ("Cache-Control: no-cache, s-maxage=60",),
        ("Cache-Control: max-age=60",),
        ("Cache-Control: s-maxage=60", "Vary: *"),
        (),
    ],
)
def test_responses_that_are_not_shared_cacheable_always_go_to_next(
    shaped: GatewayProcess, headers: tuple[str, ...]
) -> None:
    path = shaped_path(*headers, size=2000)
    serials = set()
    for _ in range(3):
        status, got, _ = shaped.request(path)
        assert status == 200 and got["X-Gateway-Cache"] == "MISS"
        serials.add(got["X-Child-Request"])
    assert len(serials) == 3


def test_statuses_other_than_200_are_not_stored(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", status=404, size=100)
    serials = {shaped.request(path)[1]["X-Child-Request"] for _ in range(2)}
    assert len(serials) == 2


def test_vary_keeps_the_rsc_payload_and_the_html_apart(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", "Vary: RSC, Accept-Encoding", size=2000)
    _, html, _ = shaped.request(path)
    _, rsc, _ = shaped.request(path, headers={"RSC": "1"})
    assert html["X-Seen-RSC"] == "-" and rsc["X-Seen-RSC"] == "1"
    assert rsc["X-Gateway-Cache"] == "MISS"  # another variant: Next is asked
    _, html2, _ = shaped.request(path, headers=BROWSER)  # Accept-Encoding: one entry for all
    _, rsc2, _ = shaped.request(path, headers={"RSC": "1", **BROWSER})
    assert html2["X-Gateway-Cache"] == rsc2["X-Gateway-Cache"] == "HIT"
    assert html2["X-Child-Request"] == html["X-Child-Request"]
    assert rsc2["X-Child-Request"] == rsc["X-Child-Request"]
    assert html2["X-Seen-RSC"] == "-" and rsc2["X-Seen-RSC"] == "1"


def test_a_hit_is_compressed_as_the_client_asks_with_an_etag_per_coding(
    shaped: GatewayProcess,
) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", size=6000, etag='"page"')
    _, _, identity = shaped.request(path)
    seen = {}
    for accept in ("gzip, deflate, br", "gzip", "identity", ""):
        status, got, body = shaped.request(path, headers={"Accept-Encoding": accept})
        assert status == 200 and got["X-Gateway-Cache"] == "HIT"
        assert decode(got, body) == identity
        assert "accept-encoding" in got["Vary"].lower()
        seen[got.get("Content-Encoding")] = got["ETag"]
        assert got["Content-Length"] == str(len(body))
    assert seen == {"br": '"page-br"', "gzip": '"page-gzip"', None: '"page"'}
    # A 304 from the entry, for the variant the client holds.
    status, got, body = shaped.request(
        path, headers={"Accept-Encoding": "br", "If-None-Match": '"page-br"'}
    )
    assert status == 304 and body == b"" and got["ETag"] == '"page-br"'
    assert got["X-Gateway-Cache"] == "HIT" and "Content-Encoding" not in got
    status, _, _ = shaped.request(
        path, headers={"Accept-Encoding": "gzip", "If-None-Match": '"page-br"'}
    )
    assert status == 200  # the brotli tag does not stand for the gzip body


def test_head_is_answered_from_the_get_entry(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", size=2500)
    _, first, body = shaped.request(path)
    status, head, empty = shaped.request(path, method="HEAD")
    assert status == 200 and empty == b"" and head["X-Gateway-Cache"] == "HIT"
    assert head["Content-Length"] == str(len(body))
    assert head["X-Child-Request"] == first["X-Child-Request"]


def test_age_counts_next_s_own_and_freshness_ends_at_s_maxage_minus_age(
    shaped: GatewayProcess,
) -> None:
    path = shaped_path("Cache-Control: s-maxage=3", "Age: 2", size=100)
    shaped.request(path)
    _, hit, _ = shaped.request(path)
    assert hit["X-Gateway-Cache"] == "HIT" and int(hit["Age"]) >= 2
    time.sleep(1.2)  # fresh for 3 - 2 = 1 s
    _, after, _ = shaped.request(path)
    assert after["X-Gateway-Cache"] == "MISS"


def test_a_stale_entry_is_served_while_one_request_refreshes_it(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=1, stale-while-revalidate=30", size=2000, delay=300)
    _, first, _ = shaped.request(path)
    time.sleep(1.1)
    before = child_count(shaped)
    results: list[http.client.HTTPMessage] = []

    def ask() -> None:
        results.append(shaped.request(path)[1])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 0.3  # nobody waited for the 300 ms refresh
    assert [r["X-Gateway-Cache"] for r in results] == ["STALE"] * 8
    assert {r["X-Child-Request"] for r in results} == {first["X-Child-Request"]}
    wait_until(lambda: shaped.request(path)[1]["X-Gateway-Cache"] == "HIT", 5, "the refresh")
    assert child_count(shaped) == before + 1  # one refresh for eight stale answers
    _, fresh, _ = shaped.request(path)
    assert fresh["X-Child-Request"] != first["X-Child-Request"]


def test_bodies_over_the_object_size_pass_through_streamed_or_not(shaped: GatewayProcess) -> None:
    for params in ({"size": MAX_OBJECT + 1}, {"size": MAX_OBJECT + 1, "chunks": 4, "length": 0}):
        path = shaped_path("Cache-Control: s-maxage=60", **params)
        serials = set()
        for _ in range(2):
            status, got, body = shaped.request(path)
            assert status == 200 and len(body) == MAX_OBJECT + 1
            serials.add(got["X-Child-Request"])
        assert len(serials) == 2


def test_a_complete_chunked_response_within_the_limit_is_stored(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", size=5000, chunks=3, interval=20, length=0)
    _, first, body = shaped.request(path, headers=BROWSER)
    _, again, cached = shaped.request(path, headers=BROWSER)
    assert again["X-Gateway-Cache"] == "HIT" and decode(again, cached) == decode(first, body)


def test_purge_through_the_server_api(shaped: GatewayProcess) -> None:
    tag = secrets.token_hex(4)
    a = f"/shaped?k={tag}&header={quote('Cache-Control: s-maxage=60')}"
    b = f"/shaped?k={tag}&other=1&header={quote('Cache-Control: s-maxage=60')}"
    for path in (a, b):
        shaped.request(path)
        assert shaped.request(path)[1]["X-Gateway-Cache"] == "HIT"
    assert purge(shaped, paths=["/shaped"])["purged"] >= 2  # every query of the path
    assert shaped.request(a)[1]["X-Gateway-Cache"] == "MISS"
    assert shaped.request(a)[1]["X-Gateway-Cache"] == "HIT"
    assert purge(shaped, prefix="/sha")["purged"] >= 1
    assert shaped.request(a)[1]["X-Gateway-Cache"] == "MISS"
    assert purge(shaped, all=True)["purged"] >= 1
    assert shaped.request(a)[1]["X-Gateway-Cache"] == "MISS"
    reply = shaped.api("cache_purge", API_KEY, prefix="no-slash")
    assert reply["error"]["code"] == 107


def test_a_response_begun_before_a_purge_is_not_stored(shaped: GatewayProcess) -> None:
    path = shaped_path("Cache-Control: s-maxage=60", size=100, delay=400)
    slow = threading.Thread(target=lambda: shaped.request(path))
    slow.start()
    time.sleep(0.15)
    purge(shaped, paths=["/shaped"])  # revalidatePath while Next was still rendering
    slow.join()
    assert shaped.request(path)[1]["X-Gateway-Cache"] == "MISS"


def test_the_cache_state_is_in_ready(shaped: GatewayProcess) -> None:
    state = shaped.ready_state()
    assert state is not None
    snapshot = state["micro_cache"]
    assert snapshot["max_bytes"] == 64 * 1024 * 1024 and snapshot["hits"] >= 1


# -- against next start ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def next_cached(
    next_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = {"next": {"dir": str(next_build)}, "proxy": {"micro_cache": cache_config()}}
    with GatewayProcess(tmp_path_factory.mktemp("next-mc"), config, env=ENV) as gw:
        gw.wait_ready(60)
        yield gw


def upstream_requests(gw: GatewayProcess) -> int:
    """Requests the gateway sent to Next: the `proxied` responses in its metrics."""
    status, _, body = gw.request("/_gateway/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("gateway_http_requests_total{") and 'kind="proxied"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_a_prerendered_page_is_served_without_next_the_second_time(
    next_cached: GatewayProcess,
) -> None:
    purge(next_cached, all=True)
    status, first, body = next_cached.request("/about", headers=BROWSER)
    assert status == 200 and first["X-Gateway-Cache"] == "MISS"
    assert "s-maxage" in first["Cache-Control"]
    asked = upstream_requests(next_cached)
    for _ in range(3):
        status, hit, again = next_cached.request("/about", headers=BROWSER)
        assert status == 200 and hit["X-Gateway-Cache"] == "HIT"
        assert decode(hit, again) == decode(first, body)
        assert hit["ETag"] == first["ETag"] and hit["Vary"] == first["Vary"]
    assert upstream_requests(next_cached) == asked


def test_the_rsc_payload_and_the_html_of_a_page_are_separate_entries(
    next_cached: GatewayProcess,
) -> None:
    rsc = {"RSC": "1", "Accept-Encoding": "identity"}
    status, _, html = next_cached.request("/about", headers={"Accept-Encoding": "identity"})
    assert status == 200 and html.startswith(b"<!DOCTYPE html>")
    status, first, payload = next_cached.request("/about?_rsc", headers=rsc)
    assert status == 200 and first["Content-Type"] == "text/x-component"
    status, hit, again = next_cached.request("/about?_rsc", headers=rsc)
    assert hit["X-Gateway-Cache"] == "HIT" and again == payload
    # The same URL without the RSC header is the HTML, not the cached payload.
    status, other, body = next_cached.request(
        "/about?_rsc", headers={"Accept-Encoding": "identity"}
    )
    assert other["Content-Type"].startswith("text/html") and body != payload


@pytest.mark.parametrize("path", ["/time", "/notes"])
def test_dynamic_pages_are_never_cached(next_cached: GatewayProcess, path: str) -> None:
    for _ in range(2):
        status, got, _ = next_cached.request(path, headers=BROWSER)
        assert status == 200 and got["X-Gateway-Cache"] == "MISS"
        assert "no-store" in got["Cache-Control"]


def test_a_server_action_is_not_cached_and_its_page_shows_the_change(
    next_cached: GatewayProcess,
) -> None:
    note = f"cached-{secrets.token_hex(3)}"
    action = server_action_id(next_cached.request("/notes")[2])
    origin = f"http://127.0.0.1:{next_cached.port}"
    status, page = post_form(next_cached, "/notes", {action: "", "text": note}, origin)
    assert status == 200, page[:500]
    assert note.encode() in next_cached.request("/notes")[2]
    # The action's revalidatePathEverywhere called cache_purge (lib/gateway-cache.ts).
    assert "POST /_gateway/api/cache_purge" in next_cached.log


def test_purge_makes_next_asked_again(next_cached: GatewayProcess) -> None:
    next_cached.request("/")
    assert next_cached.request("/")[1]["X-Gateway-Cache"] == "HIT"
    assert purge(next_cached, paths=["/"])["purged"] >= 1
    asked = upstream_requests(next_cached)
    assert next_cached.request("/")[1]["X-Gateway-Cache"] == "MISS"
    assert upstream_requests(next_cached) == asked + 1


def test_the_cache_is_off_by_default(next_gateway: GatewayProcess) -> None:
    for _ in range(2):
        for path in ("/about", "/time"):
            _, headers, _ = next_gateway.request(path, headers=BROWSER)
            assert "X-Gateway-Cache" not in headers
    state = next_gateway.ready_state()
    assert state is not None and "micro_cache" not in state
    # The glue's purgeCache knows (GATEWAY_MICRO_CACHE=0) and makes no call after an action.
    assert "/_gateway/api/cache_purge" not in next_gateway.log


# -- across --workers 2 on Redis --------------------------------------------------------------


def test_a_purge_reaches_every_worker(tmp_path: Path) -> None:
    require(redis_available(), "Redis on 127.0.0.1:6379")
    config = {
        "next": {"dir": ".", "command": [sys.executable, str(SHAPED_CHILD), "--port", "{port}"]},
        "server": {"workers": 2},
        "engine": {
            "kind": "redis",
            "redis_url": "redis://127.0.0.1:6379/14",
            "prefix": f"it-{secrets.token_hex(4)}",
        },
        "proxy": {"micro_cache": cache_config()},
    }
    path = shaped_path("Cache-Control: s-maxage=60", size=1000)
    with GatewayProcess(tmp_path, config, env=ENV) as gw:
        gw.wait_ready()
        wait_until(lambda: gw.log.count("worker serving port") >= 2, 15, "both workers to listen")

        def entries_by_worker() -> dict[str, int]:
            seen: dict[str, int] = {}
            for _ in range(40):  # each on a new connection: SO_REUSEPORT spreads them
                state = gw.ready_state()
                if state is not None:
                    seen[state["worker"]["id"]] = state["micro_cache"]["entries"]
                if len(seen) == 2:
                    break
            return seen

        def filled() -> bool:
            for _ in range(10):
                gw.request(path)
            by_worker = entries_by_worker()
            return len(by_worker) == 2 and all(n >= 1 for n in by_worker.values())

        wait_until(filled, 20, "both workers to hold the page")
        result = purge(gw, paths=["/shaped"])
        assert result["purged"] == 1 and result["processes"] == 2

        def emptied() -> bool:
            by_worker = entries_by_worker()
            return len(by_worker) == 2 and all(n == 0 for n in by_worker.values())

        wait_until(emptied, 5, "the purge to reach both workers")


def test_a_new_child_starts_with_an_empty_cache(tmp_path: Path) -> None:
    """A reload (a new build) or a restart brings another child: what the previous one
    rendered is not served from the cache any more (not even for the rest of max_ttl)."""
    config = {
        "next": {"dir": ".", "command": [sys.executable, str(SHAPED_CHILD), "--port", "{port}"]},
        "proxy": {"micro_cache": cache_config()},
    }
    with GatewayProcess(tmp_path, config, env=ENV) as gw:
        first_child = gw.wait_ready()["next"]["pid"]
        path = shaped_path("Cache-Control: s-maxage=60", size=2000)
        assert gw.request(path)[1]["X-Gateway-Cache"] == "MISS"
        assert gw.request(path)[1]["X-Gateway-Cache"] == "HIT"
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)  # gateway reload: a new child, the gateway stays
        wait_until(
            lambda: (s := gw.ready_state()) is not None and s["next"]["pid"] != first_child,
            30,
            "the new child",
        )
        assert gw.request(path)[1]["X-Gateway-Cache"] == "MISS"
        assert gw.request(path)[1]["X-Gateway-Cache"] == "HIT"
