"""A standalone build (`output: 'standalone'`) of the bundled app through the gateway, named by
its project root or by its .next/standalone folder, with no copy step: the gateway runs
`node server.js` and serves /_next/static and public/ from where `next build` left them, with
the headers Next sends when the files are copied in (the documented way).

The builds are made once and cached under .cache/ (tests/support/next_builds.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.next_builds import BuildFailed, cached_build, link_node_modules
from support.procs import GatewayProcess, free_port, http_request, spawn_logged, wait_until

from integration.conftest import STATIC_HEADERS, direct_url
from integration.test_reload import gateway_reload, point

HEADERS = STATIC_HEADERS
# nextjs-app/next.config.ts asks for output: 'standalone' with it, as the Docker image does.
STANDALONE = {"BUILD_STANDALONE": "1"}


def build(name: str, recipe: str, prepare: Callable[[Path], None]) -> Path:
    try:
        return cached_build(name, recipe, prepare, env=STANDALONE)
    except BuildFailed as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def standalone_a(next_deps: Path) -> Path:
    return build("standalone-a", "BUILD_STANDALONE=1", link_node_modules)


@pytest.fixture(scope="module")
def standalone_b(next_deps: Path) -> Path:
    """Another release: new text on /about and a client module that changes (new chunks)."""

    def prepare(work: Path) -> None:
        link_node_modules(work)
        about = work / "app" / "about" / "page.tsx"
        about.write_text(about.read_text().replace("<h1>About</h1>", "<h1>About (B)</h1>"))
        provider = work / "lib" / "realtime" / "RealtimeProvider.tsx"
        provider.write_text(
            provider.read_text()
            + '\nif (typeof window !== "undefined") (window as { __b?: number }).__b = 1;\n'
        )

    return build("standalone-b", "BUILD_STANDALONE=1, About (B), provider __b", prepare)


@pytest.fixture(scope="module")
def copied(standalone_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Next's own server.js after the documented copy step (static and public copied in, times
    kept): what the gateway must look like. Its URL."""
    folder = tmp_path_factory.mktemp("copied") / "standalone"
    subprocess.run(
        ["cp", "-al", str(standalone_a / ".next" / "standalone"), str(folder)], check=True
    )
    subprocess.run(
        ["cp", "-a", str(standalone_a / ".next" / "static"), str(folder / ".next")], check=True
    )
    subprocess.run(["cp", "-a", str(standalone_a / "public"), str(folder)], check=True)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOSTNAME": "127.0.0.1", "NEXT_TELEMETRY_DISABLED": "1"}
    lines: list[str] = []
    proc, _ = spawn_logged([shutil.which("node") or "node", "server.js"], folder, env, lines)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 30, "the copied server.js")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        http_request(url + "/robots.txt", timeout=2)
    except OSError:
        return False
    return True


def pick(headers: object) -> dict[str, str]:
    return {k: headers[k] for k in HEADERS if headers.get(k) is not None}  # type: ignore[index,attr-defined]


def page_assets(html: bytes) -> list[str]:
    found = re.findall(rb'(/_next/static/[^"\'\s<>?]+\.(?:js|css))', html)
    return sorted({url.decode() for url in found})


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("named", ["project root", ".next/standalone"])
def test_a_standalone_build_serves_through_the_gateway_from_either_directory(
    standalone_a: Path, copied: str, tmp_path: Path, named: str
) -> None:
    given = standalone_a if named == "project root" else standalone_a / ".next" / "standalone"
    with GatewayProcess(tmp_path, {"next": {"dir": str(given)}}) as gw:
        state = gw.wait_ready(60)
        assert "standalone server.js from" in gw.log
        pid, port = state["next"]["pid"], state["next"]["port"]
        # (Next renames its process "next-server": its command line is gone from /proc.)
        assert os.readlink(f"/proc/{pid}/cwd") == str(standalone_a / ".next" / "standalone")
        env = environ(pid)
        assert (env["PORT"], env["HOSTNAME"]) == (str(port), "127.0.0.1")
        assert env["KEEP_ALIVE_TIMEOUT"] == "35000"  # proxy.pool_idle_timeout (30 s) + 5 s

        # A page: the same bytes as from the child directly.
        status, _, page = gw.request("/about")
        d_status, _, d_page = http_request(direct_url(gw, "/about"))
        assert status == d_status == 200 and page == d_page and b"<h1>About</h1>" in page

        # Its chunks: the child has none (no copy step), the gateway serves them as Next does
        # once they are copied in.
        chunks = page_assets(page)
        assert chunks, "the page links no static asset"
        identity = {"Accept-Encoding": "identity"}
        for path in chunks:
            status, headers, body = gw.request(path, headers=identity)
            n_status, n_headers, n_body = http_request(copied + path, headers=identity)
            assert status == n_status == 200, path
            assert body == n_body and pick(headers) == pick(n_headers), path
            assert http_request(direct_url(gw, path))[0] == 404
        # public/ likewise, with its own Cache-Control.
        status, headers, body = gw.request("/robots.txt", headers=identity)
        n_status, n_headers, n_body = http_request(copied + "/robots.txt", headers=identity)
        assert status == n_status == 200 and body == n_body
        assert pick(headers) == pick(n_headers)
        assert headers["Cache-Control"] == "public, max-age=0"
        assert http_request(direct_url(gw, "/robots.txt"))[0] == 404
        status, _, _ = gw.request("/robots.txt", headers={"If-None-Match": headers["ETag"]})
        assert status == 304
        # Byte ranges: the child cannot answer them, so the gateway does.
        status, r_headers, part = gw.request(chunks[0], headers={"Range": "bytes=0-9"})
        n_status, n_r_headers, n_part = http_request(
            copied + chunks[0], headers={"Range": "bytes=0-9"}
        )
        assert status == n_status == 206 and part == n_part
        assert r_headers["Content-Range"] == n_r_headers["Content-Range"]

        ready = gw.ready_state()
        assert ready is not None
        assert ready["static"]["authoritative"] and ready["static"]["public_files"] >= 1
        _, _, metrics = gw.request("/_gateway/metrics")
        assert b'gateway_http_requests_total{code="2xx",kind="static"}' in metrics
    assert "Traceback" not in gw.log


def test_a_killed_standalone_child_is_restarted_and_static_stays_on(
    standalone_a: Path, tmp_path: Path
) -> None:
    # static.enabled off: a standalone server.js has no files to fall back on, so the gateway
    # serves them anyway.
    config = {
        "next": {"dir": str(standalone_a / ".next" / "standalone")},
        "static": {"enabled": False},
    }
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready(60)
        first = gw.child_pid()
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: (
                (gw.ready_state() or {}).get("next", {}).get("pid") not in (None, first)
                and gw.request("/about")[0] == 200
            ),
            30,
            "a restarted child",
        )
        chunk = page_assets(gw.request("/about")[2])[0]
        assert gw.request(chunk)[0] == 200
        assert gw.request("/robots.txt")[0] == 200


def test_reload_between_two_standalone_releases(
    standalone_a: Path, standalone_b: Path, tmp_path: Path
) -> None:
    # A is named by its .next/standalone folder, B by its project root: either may follow the
    # other behind the same link.
    point(tmp_path, standalone_a / ".next" / "standalone")
    config = {"next": {"dir": str(tmp_path / "current"), "rollback_window": 1, "drain_timeout": 5}}
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready(60)
        old_chunks = page_assets(gw.request("/about")[2])

        point(tmp_path, standalone_b)
        done = gateway_reload(gw, timeout=90)
        assert done.returncode == 0, done.stderr

        status, _, page = gw.request("/about")
        assert status == 200 and b"About (B)" in page
        for path in page_assets(page):
            assert gw.request(path)[0] == 200, (path, gw.log)
        gone = [
            p for p in old_chunks if not (standalone_b / ".next" / p[len("/_next/") :]).exists()
        ]
        assert gone, "the two builds share every chunk: the test proves nothing"
        for path in old_chunks:  # skew protection: a tab opened before the reload
            assert gw.request(path)[0] == 200, path
        assert gw.request("/robots.txt")[0] == 200
        wait_until(
            lambda: (
                (gw.ready_state() or {}).get("static", {}).get("build_id")
                == (standalone_b / ".next" / "BUILD_ID").read_text().strip()
            ),
            10,
            "the static set of B",
        )
    assert "Traceback" not in gw.log
