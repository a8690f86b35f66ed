"""Variants of the bundled Next.js app built once and cached under .cache/, keyed by a hash of
the app's sources and of the recipe that changes them: the first run pays for `next build`
(about 15 s each here), every later one finds the build ready.

The variant is a copy of the app's sources with node_modules hard-linked (Turbopack refuses a
node_modules outside its root; `cp -al` costs neither disk nor time), or, for another Next.js
version, its own node_modules installed from the npm registry."""

from __future__ import annotations

import hashlib
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
