"""How the gateway reads a Next.js directory and starts it (gateway/nextbuild.py, nextjs.py),
on directories laid out as `next build` lays them out: a project, a standalone build named by
its project root or by its .next/standalone folder, a monorepo's standalone build. No node."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from gateway import nextjs
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.nextbuild import installed_next, locate


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def next_package(
    root: Path, version: str = "16.4.6", node: str | None = ">=20.9.0", cli: bool = True
) -> None:
    meta: dict[str, object] = {"name": "next", "version": version}
    if node is not None:
        meta["engines"] = {"node": node}
    write(root / "node_modules" / "next" / "package.json", json.dumps(meta))
    if cli:  # a standalone build's traced copy has no CLI
        write(root / "node_modules" / "next" / "dist" / "bin" / "next", "// next\n")


def built(root: Path, output: str | None = None, relative: str = "") -> None:
    write(root / ".next" / "BUILD_ID", "build-1")
    config = {"distDir": ".next", **({"output": output} if output else {})}
    record = {"version": 1, "config": config, "appDir": str(root), "relativeAppDir": relative}
    write(root / ".next" / "required-server-files.json", json.dumps(record))


def project(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    next_package(app)
    built(app)
    write(app / ".next" / "static" / "chunks" / "main.js", "main")
    write(app / "public" / "robots.txt", "User-agent: *")
    return app


def standalone_project(tmp_path: Path, relative: str = "") -> Path:
    """What `next build` leaves with output: 'standalone': static and public stay in the
    project, .next/standalone/<relative> holds server.js, its .next and node_modules."""
    app = tmp_path / "app"
    next_package(app)
    built(app, "standalone", relative)
    write(app / ".next" / "static" / "chunks" / "main.js", "main")
    write(app / "public" / "robots.txt", "User-agent: *")
    root = app / ".next" / "standalone"
    folder = root / relative if relative else root
    write(folder / "server.js", "// server\n")
    built(folder, "standalone", relative)
    next_package(root, cli=False)
    return app


def test_a_project_runs_next_start_and_serves_its_own_public_files(tmp_path: Path) -> None:
    app = locate(str(project(tmp_path)))
    assert not app.standalone and app.run_dir == str(tmp_path / "app")
    assert app.static_dir == str(tmp_path / "app" / ".next" / "static")
    assert app.public_dir is None  # next start serves public/ itself


@pytest.mark.parametrize("named", ["project root", ".next/standalone"])
def test_a_standalone_build_is_recognised_by_either_directory(tmp_path: Path, named: str) -> None:
    root = standalone_project(tmp_path)
    given = root if named == "project root" else root / ".next" / "standalone"
    app = locate(str(given))
    assert app.standalone
    assert app.run_dir == str(root / ".next" / "standalone")
    # Where `next build` put them: no copy step.
    assert app.static_dir == str(root / ".next" / "static")
    assert app.public_dir == str(root / "public")
    assert app.build_id_file == str(root / ".next" / "standalone" / ".next" / "BUILD_ID")
    package = installed_next(app)
    assert package is not None and package.version == "16.4.6"


def test_copies_inside_the_standalone_folder_are_used_and_public_left_to_next(
    tmp_path: Path,
) -> None:
    root = standalone_project(tmp_path)
    folder = root / ".next" / "standalone"
    write(folder / ".next" / "static" / "chunks" / "main.js", "main")
    write(folder / "public" / "robots.txt", "User-agent: *")
    app = locate(str(folder))
    assert app.static_dir == str(folder / ".next" / "static")
    assert app.public_dir is None  # server.js finds its own copy


def test_a_monorepo_standalone_build_nests_server_js(tmp_path: Path) -> None:
    root = standalone_project(tmp_path, relative="apps/web")
    folder = root / ".next" / "standalone" / "apps" / "web"
    for given in (root, folder):
        app = locate(str(given))
        assert app.run_dir == str(folder)
        assert app.static_dir == str(root / ".next" / "static")
        assert app.public_dir == str(root / "public")
        package = installed_next(app)  # node_modules at the standalone root, as require finds it
        assert package is not None and package.version == "16.4.6"


def test_dev_mode_runs_the_project_even_after_a_standalone_build(tmp_path: Path) -> None:
    app = locate(str(standalone_project(tmp_path)), dev=True)
    assert not app.standalone and app.run_dir == str(tmp_path / "app")


def config(next_dir: Path, **next_settings: object) -> GatewayConfig:
    cfg = GatewayConfig()
    cfg.next.dir = str(next_dir)
    for key, value in next_settings.items():
        setattr(cfg.next, key, value)
    return cfg


@pytest.mark.parametrize("named", ["project root", ".next/standalone"])
def test_a_standalone_child_is_node_server_js_with_port_host_and_keep_alive(
    tmp_path: Path, named: str
) -> None:
    root = standalone_project(tmp_path)
    given = root if named == "project root" else root / ".next" / "standalone"
    cfg = config(given, env={"HOSTNAME": "user-value", "EXTRA": "1"})
    cfg.proxy.pool_idle_timeout = 30.0
    spec = nextjs.child_spec(cfg, 8000, os.path.realpath(given))
    argv = spec.argv(41234)
    assert argv[1:] == [str(root / ".next" / "standalone" / "server.js")]
    assert spec.cwd == str(root / ".next" / "standalone")
    env = {**spec.env, **spec.port_env(41234)}
    # server.js reads these instead of flags; HOSTNAME is also the shell's (or a container's)
    # host name, so it must be set whatever the environment says.
    assert env["PORT"] == "41234" and env["HOSTNAME"] == "127.0.0.1"
    assert env["KEEP_ALIVE_TIMEOUT"] == "35000"  # the pool's idle timeout + 5 s, as next start
    assert env["EXTRA"] == "1" and env["NEXT_TELEMETRY_DISABLED"] == "1"


def test_a_project_child_is_next_start(tmp_path: Path) -> None:
    app = project(tmp_path)
    spec = nextjs.child_spec(config(app), 8000)
    argv = spec.argv(41234)
    assert argv[1:3] == [str(app / "node_modules" / "next" / "dist" / "bin" / "next"), "start"]
    assert argv[argv.index("--keepAliveTimeout") + 1] == "35000"
    assert spec.port_env(41234) == {}


def fake_node(tmp_path: Path, version: str) -> str:
    path = write(tmp_path / "bin" / "node", f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def preflight_error(cfg: GatewayConfig) -> str:
    with pytest.raises(StartupError) as info:
        nextjs.preflight(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("named", ["project root", ".next/standalone"])
def test_preflight_accepts_a_standalone_build(tmp_path: Path, named: str) -> None:
    root = standalone_project(tmp_path)
    given = root if named == "project root" else root / ".next" / "standalone"
    nextjs.preflight(config(given, node=fake_node(tmp_path, "v20.9.0")))


def test_preflight_names_a_standalone_build_without_server_js(tmp_path: Path) -> None:
    root = standalone_project(tmp_path)
    (root / ".next" / "standalone" / "server.js").unlink()
    message = preflight_error(config(root, node=fake_node(tmp_path, "v22.0.0")))
    assert "standalone build" in message and "server.js" in message
    assert "npm ci" not in message


def test_preflight_refuses_dev_mode_on_a_standalone_folder(tmp_path: Path) -> None:
    folder = standalone_project(tmp_path) / ".next" / "standalone"
    message = preflight_error(config(folder, dev=True, node=fake_node(tmp_path, "v22.0.0")))
    assert f"'{tmp_path / 'app'}'" in message and "--dev" in message


@pytest.mark.parametrize(
    ("next_version", "engines", "node", "expected"),
    [
        ("15.5.29", "^18.18.0 || ^19.8.0 || >= 20.0.0", "v18.18.0", None),
        ("14.2.35", ">=18.17.0", "v18.17.0", None),
        ("16.4.6", ">=20.9.0", "v20.9.0", None),
        (
            "16.4.6",
            ">=20.9.0",
            "v18.20.4",
            "is Node.js v18.20.4; Next.js 16.4.6 needs Node.js >=20.9.0",
        ),
        (
            "15.5.29",
            "^18.18.0 || ^19.8.0 || >= 20.0.0",
            "v19.7.0",
            "is Node.js v19.7.0; Next.js 15.5.29 needs Node.js ^18.18.0 || ^19.8.0 || >= 20.0.0",
        ),
        ("13.5.6", ">=16.14.0", "v20.9.0", "Next.js 13.5.6 in "),
    ],
)
def test_the_node_floor_comes_from_the_installed_next(
    tmp_path: Path, next_version: str, engines: str, node: str, expected: str | None
) -> None:
    app = project(tmp_path)
    next_package(app, next_version, engines)
    cfg = config(app, node=fake_node(tmp_path, node))
    if expected is None:
        nextjs.preflight(cfg)
        return
    message = preflight_error(cfg)
    assert expected in message
    if next_version.startswith("13"):
        assert "not supported" in message and "14" in message


def test_a_missing_node_is_named_with_the_floor_it_needs(tmp_path: Path) -> None:
    app = project(tmp_path)
    message = preflight_error(config(app, node=str(tmp_path / "no-such-node")))
    assert "not found" in message and ">=20.9.0" in message and "next.node" in message


def test_dev_on_next_15_warns_before_overwriting_a_production_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = project(tmp_path)
    node = fake_node(tmp_path, "v22.0.0")
    next_package(app, "15.5.29", ">=18.18.0")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        nextjs.preflight(config(app, dev=True, node=node))
    warned = [r.getMessage() for r in caplog.records if "production build" in r.getMessage()]
    assert len(warned) == 1 and "Next.js 15.5.29" in warned[0] and "next build" in warned[0]

    caplog.clear()  # Next 16 keeps dev output in .next/dev: nothing to say
    next_package(app, "16.4.6", ">=20.9.0")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        nextjs.preflight(config(app, dev=True, node=node))
    assert not [r for r in caplog.records if "production build" in r.getMessage()]
