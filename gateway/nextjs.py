"""What it takes to run the bundled (or any) Next.js app as the gateway's child."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

from gateway.config import GatewayConfig
from gateway.engines import RangeError, parse_version, satisfies
from gateway.errors import StartupError
from gateway.nextbuild import OLDEST_MAJOR, NextApp, NextPackage, installed_next, locate
from gateway.supervisor import ChildSpec

log = logging.getLogger("gateway")


@functools.lru_cache(maxsize=8)
def _node_version(path: str, mtime_ns: int) -> str:
    """``node --version`` of ``path`` (cached while the binary stays the same file)."""
    try:
        return subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise StartupError(f"'{path} --version' failed: {e}") from None


def _find_node(node: str, package: NextPackage | None) -> str:
    path = shutil.which(node)
    if path is None:
        wanted = (
            f"Node.js {package.node_range} (what Next.js {package.version} needs)"
            if (package and package.node_range)
            else "Node.js"
        )
        raise StartupError(
            f"'{node}' not found on PATH: install {wanted} or set next.node to its path"
        )
    return path


def node_problem(path: str, package: NextPackage) -> str | None:
    """Why the Node.js at ``path`` cannot run ``package`` (its ``engines.node``), or None."""
    if not package.node_range:
        return None
    version = _node_version(path, os.stat(path).st_mtime_ns)
    try:
        ok = satisfies(parse_version(version), package.node_range)
    except RangeError as e:
        log.warning("cannot read the Node.js versions Next.js %s asks for: %s", package.version, e)
        return None
    if ok:
        return None
    return (
        f"{path} is Node.js {version}; Next.js {package.version} needs Node.js "
        f"{package.node_range} (its engines.node): install one, or set next.node to it"
    )


def next_problem(app: NextApp, package: NextPackage | None) -> str | None:
    """Why the Next.js of ``app`` cannot be started (not installed, too old), or None."""
    if app.standalone:
        if not os.path.isfile(app.server_js):
            return (
                f"the standalone build in '{app.dir}' has no server.js (looked for "
                f"{app.server_js}): run `next build` again"
            )
        if package is None:
            return (
                f"the standalone build in '{app.run_dir}' has no node_modules/next: "
                "run `next build` again"
            )
    elif package is None or not os.path.isfile(app.next_bin):
        return f"Next.js is not installed in '{app.dir}': run `npm ci` there (or `make build`)"
    if package.major < OLDEST_MAJOR:
        return (
            f"Next.js {package.version} in '{app.dir}' is not supported: the gateway needs "
            f"Next.js {OLDEST_MAJOR} or later"
        )
    return None


def _standalone_folder_in_dev(cfg: GatewayConfig) -> str | None:
    app = locate(cfg.next.dir)
    if app.standalone and app.run_dir == app.dir and app.project_dir:
        return (
            f"'{app.dir}' is a standalone build's server folder: --dev runs `next dev` in the "
            f"project, so set --next-dir to '{app.project_dir}'"
        )
    return None


def preflight(cfg: GatewayConfig) -> None:
    """Fail fast, with one line, on what would otherwise be a crash loop of the child."""
    next_dir = cfg.next.dir
    if not os.path.isdir(next_dir):
        raise StartupError(
            f"Next.js directory '{next_dir}' does not exist "
            "(set --next-dir, GATEWAY_NEXT_DIR or next.dir)"
        )
    if cfg.next.command:
        return
    if cfg.next.dev and (problem := _standalone_folder_in_dev(cfg)):
        raise StartupError(problem)
    app = locate(next_dir, cfg.next.dev)
    package = installed_next(app)
    node = _find_node(cfg.next.node, package)
    problem = next_problem(app, package)
    if problem is None:
        assert package is not None
        problem = node_problem(node, package)
    if problem is not None:
        raise StartupError(problem)
    assert package is not None
    if not cfg.next.dev and not os.path.isfile(app.build_id_file):
        raise StartupError(
            f"no production build in '{next_dir}/.next': run `make build` "
            f"(or `npx next build` in {next_dir}), or start with --dev"
        )
    if cfg.next.dev and package.major <= 15:
        build = os.path.join(app.run_dir, ".next", "BUILD_ID")
        if os.path.isfile(build):
            log.warning(
                "--dev: Next.js %s writes its dev output into %s and so deletes the production "
                "build there (Next.js 16 keeps it apart, in .next/dev); run `next build` again "
                "before serving it without --dev",
                package.version,
                os.path.dirname(build),
            )


def checks_dev_origins(cfg: GatewayConfig) -> bool:
    """True when the child is a `next dev` that refuses HMR from origins it does not know
    (Next.js 16 and later; 15 only warned)."""
    if not cfg.next.dev or cfg.next.command:
        return False
    package = installed_next(locate(cfg.next.dir, dev=True))
    return package is not None and package.major >= 16


def child_kind(cfg: GatewayConfig) -> str:
    """What the child runs, for the start-up line."""
    if cfg.next.command:
        return "next.command"
    if cfg.next.dev:
        return "next dev"
    return "standalone server.js" if locate(cfg.next.dir).standalone else "next start"


def internal_url(host: str, port: int) -> str:
    """How processes on this machine reach the gateway (the Next.js server calling its API)."""
    if host in ("", "0.0.0.0", "127.0.0.1", "localhost"):
        return f"http://127.0.0.1:{port}"
    if host in ("::", "::1"):
        return f"http://[::1]:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def release_problem(cfg: GatewayConfig, release_dir: str) -> str | None:
    """Why ``release_dir`` cannot be started (for a reload), or None."""
    if not os.path.isdir(release_dir):
        return f"'{release_dir}' does not exist"
    if cfg.next.command:
        return None
    app = locate(release_dir, cfg.next.dev)
    package = installed_next(app)
    problem = next_problem(app, package)
    if problem is not None:
        return problem
    if not cfg.next.dev and not os.path.isfile(app.build_id_file):
        return f"no production build in '{release_dir}/.next' (next build there first)"
    node = shutil.which(cfg.next.node)
    if node is None:
        return f"'{cfg.next.node}' not found on PATH"
    assert package is not None
    try:
        return node_problem(node, package)
    except StartupError as e:
        return str(e)


def _no_port_env(port: int) -> Mapping[str, str]:
    return {}


def child_spec(cfg: GatewayConfig, public_port: int, release_dir: str | None = None) -> ChildSpec:
    """The supervised child for ``cfg``; ``public_port`` is the port the gateway listens on;
    ``release_dir`` is the resolved release to run (default: ``next.dir``)."""
    nxt = dataclasses.replace(cfg.next, dir=release_dir or cfg.next.dir)
    app = locate(nxt.dir, nxt.dev)
    host = "127.0.0.1"
    # Next must keep idle connections open longer than the gateway's pool does, so that the
    # gateway, not Next, closes them (`next dev` has no such option: see make_proxy).
    keep_alive_ms = str(int((cfg.proxy.pool_idle_timeout + 5) * 1000))
    extra_env: dict[str, str] = {}
    port_env: Callable[[int], Mapping[str, str]] = _no_port_env
    cwd = os.path.abspath(nxt.dir)
    if nxt.command:
        template = list(nxt.command)

        def argv(port: int) -> list[str]:
            return [a.replace("{host}", host).replace("{port}", str(port)) for a in template]
    elif app.standalone:
        node = shutil.which(nxt.node) or nxt.node
        server = app.server_js
        cwd = app.run_dir
        # server.js takes no flags: it reads these. HOSTNAME is also the host's name in most
        # shells and containers, so it is set whatever the environment says.
        extra_env["KEEP_ALIVE_TIMEOUT"] = keep_alive_ms

        def argv(port: int) -> list[str]:
            return [node, server]

        def listen_env(port: int) -> Mapping[str, str]:
            return {"PORT": str(port), "HOSTNAME": host}

        port_env = listen_env
    else:
        node = shutil.which(nxt.node) or nxt.node
        script = os.path.abspath(app.next_bin)

        def argv(port: int) -> list[str]:
            if nxt.dev:
                return [node, script, "dev", "-H", host, "-p", str(port)]
            return [
                node,
                script,
                "start",
                "-H",
                host,
                "-p",
                str(port),
                "--keepAliveTimeout",
                keep_alive_ms,
            ]

    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_INTERNAL_URL": internal_url(cfg.server.host, public_port),
            # The glue's purgeCache skips its API call when there is no micro-cache to purge.
            "GATEWAY_MICRO_CACHE": "1" if cfg.proxy.micro_cache.enabled else "0",
            # Next's own telemetry phones home; a gateway in production has no business doing so.
            "NEXT_TELEMETRY_DISABLED": env.get("NEXT_TELEMETRY_DISABLED", "1"),
            **extra_env,
        }
    )
    if cfg.auth.secret:
        env["WS_SECRET"] = cfg.auth.secret
    if cfg.api.key:
        env["GATEWAY_API_KEY"] = cfg.api.key
    env.update(nxt.env)
    r = nxt.restart
    return ChildSpec(
        name="next",
        argv=argv,
        cwd=cwd,
        env=env,
        port_env=port_env,
        host=host,
        port=nxt.port,
        ready_path=nxt.ready_path,
        start_timeout=nxt.start_timeout,
        stop_grace=nxt.stop_grace,
        backoff_initial=r.backoff_initial,
        backoff_max=r.backoff_max,
        max_failures=r.max_failures,
        stable_after=r.stable_after,
    )
