"""Variants of the bundled Next.js app built once and cached under .cache/, keyed by a hash of
the app's sources and of the recipe that changes them: the first run pays for `next build`
(about 15 s each here), every later one finds the build ready.

The variant is a copy of the app's sources with node_modules hard-linked (Turbopack refuses a
node_modules outside its root; `cp -al` costs neither disk nor time), or, for another Next.js
version, its own node_modules installed from the npm registry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.procs import ROOT

APP = ROOT / "nextjs-app"
CACHE = ROOT / ".cache" / "next-variants"
_SKIP = {"node_modules", ".next", "tests", "tsconfig.tsbuildinfo", "next-env.d.ts"}


class BuildFailed(Exception):
    pass


def sources_hash(app: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(app.rglob("*")):
        rel = path.relative_to(app)
        if rel.parts[0] in _SKIP or not path.is_file():
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def copy_sources(target: Path, app: Path = APP) -> None:
    shutil.copytree(app, target, ignore=lambda d, names: [n for n in names if n in _SKIP])


def cached_build(
    name: str,
    recipe: str,
    prepare: Callable[[Path], None],
    app: Path = APP,
    env: dict[str, str] | None = None,
) -> Path:
    """The project directory of variant ``name``: ``prepare(work)`` turns a copy of ``app``'s
    sources into it (and provides node_modules), then `next build` runs in it. ``recipe``
    describes what ``prepare`` does: change it and the variant is built again."""
    key = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    target = CACHE / f"{name}-{sources_hash(app)}-{key}"
    if (target / ".next" / "BUILD_ID").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    copy_sources(work, app)
    prepare(work)
    built = subprocess.run(
        ["node", "node_modules/next/dist/bin/next", "build"],
        cwd=work,
        env={**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **(env or {})},
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise BuildFailed(f"building {name} failed:\n{built.stdout}\n{built.stderr}")
    work.rename(target)
    return target


def link_node_modules(work: Path, app: Path = APP) -> None:
    subprocess.run(["cp", "-al", str(app / "node_modules"), str(work)], check=True)


COMPAT_APP = ROOT / "tests" / "compat" / "app"
# Next.js -> the React it is built with (14 supports React 18 only).
REACT_FOR = {"14": "18.3.1", "15": "19.3.1", "16": "19.3.1"}


def installed_next_version(app: Path = APP) -> str:
    return str(json.loads((app / "node_modules" / "next" / "package.json").read_text())["version"])


def npm_install_next(version: str) -> Path:
    """A node_modules with Next.js ``version`` and its React, installed from the npm registry
    once (cached like the builds); link it into a project with :func:`link_node_modules`."""
    react = REACT_FOR[version.split(".")[0]]
    target = CACHE / f"npm-next-{version}-react-{react}"
    if (target / "node_modules" / "next" / "package.json").is_file():
        return target
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    package = {
        "name": "compat-app",
        "private": True,
        "dependencies": {"next": version, "react": react, "react-dom": react},
    }
    (work / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    installed = subprocess.run(
        # No install scripts: nothing may download a binary of its own (SWC and sharp come as
        # npm packages).
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        raise BuildFailed(f"npm install next@{version} failed:\n{installed.stderr[-3000:]}")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target


def compat_build(version: str, standalone: bool = False) -> Path:
    """tests/compat/app built with Next.js ``version`` (the bundled app's node_modules when it
    is the same Next.js), as a project or as a standalone build."""
    same = version == installed_next_version()
    deps = APP if same else npm_install_next(version)

    def prepare(work: Path) -> None:
        link_node_modules(work, deps)
        if not same:
            shutil.copy2(deps / "package.json", work / "package.json")

    mode = "standalone" if standalone else "project"
    recipe = f"node_modules of {deps.name}, {mode}"
    env = {"BUILD_STANDALONE": "1"} if standalone else {}
    return cached_build(f"compat-{version}-{mode}", recipe, prepare, app=COMPAT_APP, env=env)
