"""The compatibility matrix (docs/compatibility.md): the same small app (tests/compat/app) built
with each Next.js major users run, as a project (`next start`) and as a standalone build, and
the proxy behaviours that matter checked through the gateway against the child directly:
streaming, a Server Action, 304s, static headers, public files; and in dev mode, the HMR
socket through the gateway.

Next.js 14 and 15 come from the npm registry, installed once; every build is cached under
.cache/ by a hash of the app's sources (tests/support/next_builds.py). HMR with Next.js 16 (the
bundled app) is checked by test_websocket_passthrough.py."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import require
from support import debian_node
from support.next_builds import (
    COMPAT_APP,
    BuildFailed,
    compat_build,
    copy_sources,
    link_node_modules,
    npm_install_next,
)
from support.procs import ROOT, GatewayProcess, http_request, open_response, spawn_logged

from integration.conftest import STATIC_HEADERS, direct_url

MATRIX = [
    ("14.2.35", False),
    ("15.5.29", False),
    ("15.5.29", True),
    ("16.4.6", False),
]
HEADERS = STATIC_HEADERS


@pytest.fixture(scope="module", params=MATRIX, ids=lambda p: f"next-{p[0]}{'-standalone' * p[1]}")
def compat(
    request: pytest.FixtureRequest, next_deps: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    version, standalone = request.param
    try:
        app = compat_build(version, standalone)
    except BuildFailed as e:
        pytest.fail(str(e))
    next_dir = app / ".next" / "standalone" if standalone else app
    with GatewayProcess(tmp_path_factory.mktemp("compat"), {"next": {"dir": str(next_dir)}}) as gw:
        gw.wait_ready(60)
        yield gw, version


def pick(headers: object) -> dict[str, str]:
    return {k: headers[k] for k in HEADERS if headers.get(k) is not None}  # type: ignore[index,attr-defined]


def test_the_child_is_the_version_and_kind_asked_for(compat: tuple[GatewayProcess, str]) -> None:
    gw, version = compat
    assert f"Next.js {version}" in gw.log or f"Next.js v{version}" in gw.log  # its banner


def test_a_prerendered_page_and_its_304(compat: tuple[GatewayProcess, str]) -> None:
    gw, _ = compat
    status, headers, page = gw.request("/")
    d_status, _, d_page = http_request(direct_url(gw, "/"))
    assert status == d_status == 200 and page == d_page and b"compat home" in page
    etag = headers["ETag"]
    status, h304, body = gw.request("/", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and h304["ETag"] == etag


def test_static_chunks_and_public_files_as_next_sends_them(
    compat: tuple[GatewayProcess, str],
) -> None:
    gw, _ = compat
    standalone = (gw.ready_state() or {})["static"]["authoritative"]
    chunks = sorted(set(re.findall(r'(/_next/static/[^"]+\.js)"', gw.request("/")[2].decode())))
    assert chunks, "the page links no chunk"
    identity = {"Accept-Encoding": "identity"}
    for path in [*chunks, "/hello.txt"]:
        status, headers, body = gw.request(path, headers=identity)
        assert status == 200, path
        d_status, d_headers, d_body = http_request(direct_url(gw, path), headers=identity)
        if standalone:  # server.js has no copy of them: the gateway is their only server
            assert d_status == 404, path
            expected = "public, max-age=0" if path == "/hello.txt" else "immutable"
            assert expected in headers["Cache-Control"]
        else:
            assert d_status == 200 and body == d_body and pick(headers) == pick(d_headers), path


def test_a_suspense_page_streams(compat: tuple[GatewayProcess, str]) -> None:
    gw, _ = compat
    started = time.monotonic()
    conn, resp = open_response(gw.url("/stream"))
    try:
        assert resp.status == 200
        data, shell_at = b"", 0.0
        while b'id="slow"' not in data:
            chunk = resp.read1(65536)
            assert chunk, data[-300:]
            data += chunk
            if not shell_at and b"stream shell" in data:
                shell_at = time.monotonic()
        slow_at = time.monotonic()
    finally:
        conn.close()
    assert shell_at - started < 1.0  # not held until the page was complete
    assert slow_at - started >= 1.5


def test_a_server_action_form(compat: tuple[GatewayProcess, str]) -> None:
    gw, _ = compat
    page = gw.request("/action")[2]
    found = re.search(rb'name="(\$ACTION_ID_[0-9a-f]+)"', page)
    assert found, "no Server Action form on /action"
    said = uuid.uuid4().hex[:8]
    boundary = uuid.uuid4().hex
    fields = {found[1].decode(): "", "text": said}
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        ).encode()
        + f"--{boundary}--\r\n".encode()
    )
    status, headers, _ = gw.request(
        "/action",
        method="POST",
        body=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": gw.url("").rstrip("/"),
            "Accept": "text/html",
        },
    )
    assert status == 303 and headers["Location"].endswith(f"/action?said={said}"), status
    assert f"said: {said}".encode() in gw.request(f"/action?said={said}")[2]


@pytest.mark.parametrize("version", ["14.2.35", "15.5.29"])
def test_hmr_through_the_gateway_in_dev(version: str, next_deps: Path, tmp_path: Path) -> None:
    try:
        deps = npm_install_next(version)
    except BuildFailed as e:
        pytest.fail(str(e))
    # A copy of the sources: `next dev` of 14 and 15 writes into .next, which must not be a
    # cached build's.
    app = tmp_path / "app"
    copy_sources(app, COMPAT_APP)
    link_node_modules(app, deps)
    with GatewayProcess(tmp_path, {"next": {"dir": str(app)}}, args=["--dev"]) as gw:
        gw.wait_ready(90)

        async def first_message(origin: str | None) -> dict[str, object]:
            url = f"ws://127.0.0.1:{gw.port}/_next/webpack-hmr"
            async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                message: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 30))
                return message

        assert asyncio.run(first_message(None))["action"] == "sync"
        # 14 and 15 accept any origin (15 only warns): no allowedDevOrigins hint from us.
        assert asyncio.run(first_message("http://devbox.lan:3000"))["action"] == "sync"
        assert not [line for line in gw.lines if "gateway.proxy.websocket" in line]


class NamespacedGateway(GatewayProcess):
    """A gateway started behind a command prefix (here: a private mount namespace)."""

    def __init__(self, workdir: Path, config: dict[str, object], prefix: list[str]) -> None:
        super().__init__(workdir, config)
        self.prefix = prefix

    def start(self) -> None:
        cmd = [*self.prefix, sys.executable, "-m", "gateway", "run"]
        cmd += ["--config", str(self.config_path), "--port", str(self.port)]
        self.proc, self._reader = spawn_logged(cmd, ROOT, self.env, self.lines)


def test_node_18_runs_next_14_and_15_and_next_16_refuses_it(
    next_deps: Path, tmp_path: Path
) -> None:
    try:
        tree = debian_node.node18()
        version = debian_node.check_runs(tree, tmp_path)
    except debian_node.Unavailable as e:
        require(False, f"Debian's Node.js 18 ({e})", "apt-get update")
        return
    assert version.startswith("v18."), version
    node, prefix = debian_node.wrapper(tree, tmp_path), debian_node.in_namespace(tree)
    for next_version, standalone in [("15.5.29", False), ("15.5.29", True), ("14.2.35", False)]:
        try:
            app = compat_build(next_version, standalone)
        except BuildFailed as e:
            pytest.fail(str(e))
        next_dir = app / ".next" / "standalone" if standalone else app
        workdir = tmp_path / f"{next_version}-{standalone}"
        workdir.mkdir()
        config = {"next": {"dir": str(next_dir), "node": str(node)}}
        with NamespacedGateway(workdir, config, prefix) as gw:
            gw.wait_ready(60)
            status, _, page = gw.request("/")
            assert status == 200 and b"compat home" in page, next_version
            assert gw.request("/hello.txt")[0] == 200
            assert gw.request("/stream")[0] == 200
        assert f"Next.js {next_version}" in gw.log
    # The bundled app's Next.js 16 asks for >=20.9.0: one line, before anything starts.
    config_path = tmp_path / "16.yaml"
    config_path.write_text(f"next:\n  node: {node}\n  dir: {ROOT / 'nextjs-app'}\n")
    refused = subprocess.run(
        [*prefix, sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert f"is Node.js {version}; Next.js 16.4.6 needs Node.js >=20.9.0" in refused.stderr
