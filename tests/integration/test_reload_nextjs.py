"""A reload between two real `next build`s of the bundled app: the second built with Next's own
skew mechanism on (NEXT_DEPLOYMENT_ID), which must keep working through the gateway.

The second build is made once and cached under .cache/ by a hash of the app's sources."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.next_builds import BuildFailed, cached_build, link_node_modules
from support.procs import GatewayProcess, wait_until

from integration.test_reload import gateway_reload, point

DEPLOYMENT_ID = "dpl-b"


def make_b(work: Path) -> None:
    """Visibly different: new text on /about, and a client module that changes (new chunks)."""
    link_node_modules(work)
    about = work / "app" / "about" / "page.tsx"
    about.write_text(about.read_text().replace("<h1>About</h1>", "<h1>About (release B)</h1>"))
    provider = work / "lib" / "realtime" / "RealtimeProvider.tsx"
    provider.write_text(
        provider.read_text()
        + '\nif (typeof window !== "undefined") (window as { __release?: string }).__release = "b";\n'
    )


@pytest.fixture(scope="module")
def release_b(next_build: Path) -> Path:
    """The bundled app built again with NEXT_DEPLOYMENT_ID, once per version of its sources."""
    try:
        return cached_build(
            "release-b",
            f"about heading, provider marker, NEXT_DEPLOYMENT_ID={DEPLOYMENT_ID}",
            make_b,
            env={"NEXT_DEPLOYMENT_ID": DEPLOYMENT_ID},
        )
    except BuildFailed as e:
        pytest.fail(str(e))


@pytest.fixture
def deploy(next_build: Path, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    point(tmp_path, next_build.resolve())
    config = {"next": {"dir": str(tmp_path / "current"), "rollback_window": 1, "drain_timeout": 5}}
    with GatewayProcess(tmp_path, config) as gw:
        gw.wait_ready(60)
        yield gw, tmp_path


def assets(html: bytes) -> list[str]:
    """The /_next/static URLs a page loads (with Next's ?dpl= suffix when it has one)."""
    found = re.findall(rb'(/_next/static/[^"\'\s<>?]+\.(?:js|css)(?:\?dpl=[\w-]+)?)', html)
    return sorted({url.decode() for url in found})


def test_reload_to_a_new_build_keeps_old_chunks_and_next_skew_protection(
    deploy: tuple[GatewayProcess, Path], release_b: Path
) -> None:
    gw, root = deploy
    status, _, page = gw.request("/about")
    assert status == 200
    old_assets = assets(page)
    assert old_assets, "no static assets in the page"
    old_build = (Path(os.readlink(root / "current")) / ".next" / "BUILD_ID").read_text()

    point(root, release_b)
    done = gateway_reload(gw, timeout=90)
    assert done.returncode == 0, done.stderr
    new_build = (release_b / ".next" / "BUILD_ID").read_text()
    assert new_build != old_build and new_build in done.stdout

    status, _, page = gw.request("/about")
    assert status == 200
    assert b"About (release B)" in page  # the new build's page
    new_assets = assets(page)
    # Next's deploymentId: its asset URLs carry ?dpl=, and the gateway's static path serves them.
    assert any(f"?dpl={DEPLOYMENT_ID}" in a for a in new_assets), new_assets
    for url in new_assets[:3]:
        assert gw.request(url)[0] == 200, url
    # A tab opened before the deploy still loads the old build's chunks, those the new build
    # does not have included (served from memory: skew protection).
    gone = [u for u in old_assets if not (release_b / ".next" / u[len("/_next/") :]).exists()]
    assert gone, "the two builds share every chunk: the test proves nothing"
    for url in old_assets:
        assert gw.request(url)[0] == 200, url
    # Its next navigation (an RSC request, carrying the old deployment id) gets the new build.
    rsc = {"RSC": "1", "x-deployment-id": "stale", "Next-Router-State-Tree": "%5B%22%22%5D"}
    status, headers, body = gw.request("/about", headers=rsc)
    if status == 307:  # Next adds its cache-busting _rsc parameter first
        status, headers, body = gw.request(headers["Location"], headers=rsc)
    assert status == 200, (status, headers.get("Location"))
    assert "text/x-component" in headers.get("Content-Type", "")
    # The new page, and chunks of the new deployment: the router sees another deployment
    # than its own and loads the page in full.
    assert b"About (release B)" in body and f"?dpl={DEPLOYMENT_ID}".encode() in body
    wait_until(lambda: gw.ready_state()["next"]["build_id"] == new_build, 5, "ready shows b")  # type: ignore[index]
    assert "Traceback" not in gw.log
