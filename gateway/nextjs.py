"""What it takes to run the bundled (or any) Next.js app as the gateway's child."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.supervisor import ChildSpec

MIN_NODE = (20, 9)  # Next.js 16's `engines.node`


def _next_bin(next_dir: str) -> str:
    return os.path.join(next_dir, "node_modules", "next", "dist", "bin", "next")


def _check_node(node: str) -> str:
    path = shutil.which(node)
    if path is None:
        raise StartupError(
            f"'{node}' not found on PATH: install Node.js >= {MIN_NODE[0]}.{MIN_NODE[1]} "
            "or set next.node to its path"
        )
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise StartupError(f"'{path} --version' failed: {e}") from None
    m = re.match(r"v(\d+)\.(\d+)", out)
    if m and (int(m[1]), int(m[2])) < MIN_NODE:
        raise StartupError(
            f"{path} is Node.js {out}; Next.js 16 needs >= {MIN_NODE[0]}.{MIN_NODE[1]}"
        )
    return path


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
    _check_node(cfg.next.node)
    if not os.path.isfile(_next_bin(next_dir)):
        raise StartupError(
            f"Next.js is not installed in '{next_dir}': run `npm ci` there (or `make build`)"
        )
    if not cfg.next.dev and not os.path.isfile(os.path.join(next_dir, ".next", "BUILD_ID")):
        raise StartupError(
            f"no production build in '{next_dir}/.next': run `make build` "
            f"(or `npx next build` in {next_dir}), or start with --dev"
        )


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
    if not cfg.next.command and not os.path.isfile(_next_bin(release_dir)):
        return f"Next.js is not installed in '{release_dir}' (npm ci there)"
    if not cfg.next.dev and not cfg.next.command:
        if not os.path.isfile(os.path.join(release_dir, ".next", "BUILD_ID")):
            return f"no production build in '{release_dir}/.next' (next build there first)"
    return None


def child_spec(cfg: GatewayConfig, public_port: int, release_dir: str | None = None) -> ChildSpec:
    """The supervised child for ``cfg``; ``public_port`` is the port the gateway listens on;
    ``release_dir`` is the resolved release to run (default: ``next.dir``)."""
    nxt = dataclasses.replace(cfg.next, dir=release_dir or cfg.next.dir)
    host = "127.0.0.1"
    if nxt.command:
        template = list(nxt.command)

        def argv(port: int) -> list[str]:
            return [a.replace("{host}", host).replace("{port}", str(port)) for a in template]
    else:
        node = shutil.which(nxt.node) or nxt.node
        script = os.path.abspath(_next_bin(nxt.dir))

        # Next must keep idle connections open longer than the gateway's pool does, so that the
        # gateway, not Next, closes them (`next dev` has no such option: see make_proxy).
        keep_alive_ms = str(int((cfg.proxy.pool_idle_timeout + 5) * 1000))

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
            # Next's own telemetry phones home; a gateway in production has no business doing so.
            "NEXT_TELEMETRY_DISABLED": env.get("NEXT_TELEMETRY_DISABLED", "1"),
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
        cwd=os.path.abspath(nxt.dir),
        env=env,
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
