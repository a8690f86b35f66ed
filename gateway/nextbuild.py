"""What a Next.js app directory holds, as the gateway needs to know it.

Two layouts run in production:

- a **project** (``next build``): ``next start`` runs in it and serves everything itself;
- a **standalone build** (``output: 'standalone'``): ``node server.js`` runs in
  ``.next/standalone``, which holds the server and the traced ``node_modules`` but neither
  ``.next/static`` nor ``public/``: ``next build`` leaves them in the project, and Next's docs
  ask for a copy step. The gateway serves them from where the build put them instead.

``next.dir`` may name the project root of a standalone build or its ``.next/standalone`` folder
(the one a container usually ships); both are recognised by the build's own record,
``.next/required-server-files.json`` (``config.output``), not by guessing from file names. In a
monorepo ``server.js`` sits deeper, at ``.next/standalone/<relativeAppDir>/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from gateway.engines import RangeError, Version, parse_version

OLDEST_MAJOR = 14  # the oldest Next.js the gateway is tested with (docs/compatibility.md)


@dataclass(frozen=True)
class NextApp:
    """Where the pieces of one Next.js app are (paths absolute)."""

    dir: str
    """``next.dir`` as given, made absolute."""
    run_dir: str
    """The child's working directory: the project, or the folder holding ``server.js``."""
    standalone: bool
    static_dir: str
    """What ``/_next/static/`` serves."""
    public_dir: str | None
    """``public/`` files the gateway must serve itself because the child cannot (a standalone
    build without a copy of them), or None: the child serves its own."""
    project_dir: str | None
    """The project a standalone build came from (``<project>/.next/standalone``), if known."""

    @property
    def build_id_file(self) -> str:
        return os.path.join(self.run_dir, ".next", "BUILD_ID")

    @property
    def server_js(self) -> str:
        return os.path.join(self.run_dir, "server.js")

    @property
    def next_bin(self) -> str:
        return os.path.join(self.run_dir, "node_modules", "next", "dist", "bin", "next")

    def next_package_json(self) -> str | None:
        """The installed ``next/package.json``, looked up as Node's ``require`` would (a
        monorepo's standalone build keeps ``node_modules`` at the standalone root)."""
        here = self.run_dir
        stop = os.path.dirname(self.project_dir or self.run_dir)
        while True:
            candidate = os.path.join(here, "node_modules", "next", "package.json")
            if os.path.isfile(candidate):
                return candidate
            parent = os.path.dirname(here)
            if here == stop or parent == here:
                return None
            here = parent


@dataclass(frozen=True)
class NextPackage:
    """The installed Next.js: its version and the Node.js versions it accepts."""

    version: str
    node_range: str | None
    """``engines.node`` of its package.json (None: it states none)."""

    @property
    def major(self) -> int:
        return self.parsed[0]

    @property
    def parsed(self) -> Version:
        return parse_version(self.version)


def _build_config(app_dir: str) -> dict[str, Any]:
    """The ``required-server-files.json`` a production build wrote, or {}."""
    try:
        with open(os.path.join(app_dir, ".next", "required-server-files.json"), "rb") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _standalone_root(folder: str, relative_app_dir: str) -> str:
    """``.next/standalone`` for the folder that holds ``server.js``."""
    depth = len([p for p in relative_app_dir.split("/") if p and p != "."])
    root = folder
    for _ in range(depth):
        root = os.path.dirname(root)
    return root


def locate(next_dir: str, dev: bool = False) -> NextApp:
    """The layout of ``next_dir`` (a project, or a standalone build named by its project root
    or its ``.next/standalone`` folder). ``dev``: ``next dev`` runs in the project itself."""
    given = os.path.abspath(next_dir)
    record = {} if dev else _build_config(given)
    config = record.get("config")
    if not isinstance(config, dict) or config.get("output") != "standalone":
        return NextApp(
            dir=given,
            run_dir=given,
            standalone=False,
            static_dir=os.path.join(given, ".next", "static"),
            public_dir=None,
            project_dir=None,
        )
    relative = str(record.get("relativeAppDir") or "")
    nested = os.path.join(given, ".next", "standalone", relative)
    if os.path.isfile(os.path.join(nested, "server.js")):
        run_dir, project = os.path.normpath(nested), given  # the project root
    else:  # the standalone folder itself (or a broken build: preflight says so)
        run_dir = given
        project = os.path.dirname(os.path.dirname(_standalone_root(given, relative)))
    # Copies the user made beside server.js win: that is where Next itself looks.
    static = os.path.join(run_dir, ".next", "static")
    if not os.path.isdir(static):
        static = os.path.join(project, ".next", "static")
    public: str | None = None
    if not os.path.isdir(os.path.join(run_dir, "public")):
        candidate = os.path.join(project, "public")
        public = candidate if os.path.isdir(candidate) else None
    return NextApp(
        dir=given,
        run_dir=run_dir,
        standalone=True,
        static_dir=static,
        public_dir=public,
        project_dir=project,
    )


def installed_next(app: NextApp) -> NextPackage | None:
    """The Next.js that ``app`` runs, or None when it is not installed there."""
    path = app.next_package_json()
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            meta = json.load(f)
        version = str(meta["version"])
        parse_version(version)
    except (OSError, ValueError, KeyError, TypeError, RangeError):
        return None
    engines = meta.get("engines")
    node = engines.get("node") if isinstance(engines, dict) else None
    return NextPackage(version=version, node_range=str(node) if node else None)
