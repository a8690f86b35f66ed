"""Node.js 18 for the compatibility tests: Debian bookworm's `nodejs` 18, the only Node 18 this
machine can fetch (nodejs.org binaries cannot be downloaded here).

Debian's node cannot be installed beside the Node 20 the project runs on (same package name),
and it loads parts of itself from /usr/share/nodejs (undici for fetch, cjs-module-lexer,
acorn). So its packages are unpacked under .cache/ (`apt-get download`, `dpkg -x`, once), and
a program that runs it is started in a private mount namespace where that unpacked /usr/share
is laid over the real one (`unshare -m` + an overlay mount): nothing on the machine changes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from support.procs import ROOT

CACHE = ROOT / ".cache" / "debian-node-18"
# What Debian's nodejs 18 needs that this machine does not have.
PACKAGES = (
    "libnode108",
    "libc-ares2",
    "node-undici",
    "node-cjs-module-lexer",
    "node-acorn",
    "node-busboy",
    "node-xtend",
)


class Unavailable(Exception):
    """Debian's Node 18 cannot be had or run here; ``str()`` says why."""


def _node18_versions() -> list[str]:
    out = subprocess.run(
        ["apt-cache", "madison", "nodejs"], capture_output=True, text=True, check=False
    ).stdout
    # madison lists the preferred (security) version first
    return re.findall(r"^\s*nodejs \| (18\.[^ ]+) \|", out, re.M)


def _node18_version() -> str:
    versions = _node18_versions()
    if not versions and os.geteuid() == 0:  # a fresh machine: no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        versions = _node18_versions()
    if not versions:
        raise Unavailable("apt knows no nodejs 18 (run apt-get update)")
    return versions[0]


def node18() -> Path:
    """The unpacked tree (``root/usr/bin/node`` and the rest), fetched once."""
    if (CACHE / "root" / "usr" / "bin" / "node").is_file():
        return CACHE
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable("no apt-get or dpkg")
    version = _node18_version()
    work = CACHE.with_name(CACHE.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    (work / "debs").mkdir(parents=True)
    wanted = [f"nodejs={version}", f"libnode108={version}", *PACKAGES[1:]]
    got = subprocess.run(
        ["apt-get", "download", *wanted], cwd=work / "debs", capture_output=True, text=True
    )
    if got.returncode != 0:
        raise Unavailable(f"apt-get download failed: {got.stderr.strip()[-500:]}")
    for deb in sorted((work / "debs").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(work / "root")], check=True)
    shutil.rmtree(CACHE, ignore_errors=True)
    work.rename(CACHE)
    return CACHE


def wrapper(tree: Path, directory: Path) -> Path:
    """A `node` executable (a shell script) for ``next.node``: Debian's node with its libraries."""
    script = directory / "node18"
    libs = tree / "root" / "usr" / "lib" / "x86_64-linux-gnu"
    script.write_text(
        f'#!/bin/sh\nLD_LIBRARY_PATH="{libs}" exec "{tree / "root" / "usr" / "bin" / "node"}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def in_namespace(tree: Path) -> list[str]:
    """The command prefix that runs a program where Debian's /usr/share/nodejs is visible."""
    share = tree / "root" / "usr" / "share"
    mount = f"mount -t overlay overlay -o lowerdir={share}:/usr/share /usr/share"
    return ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh"]


def check_runs(tree: Path, directory: Path) -> str:
    """``node --version`` inside the namespace; raises Unavailable when that cannot work here."""
    if shutil.which("unshare") is None:
        raise Unavailable("no unshare")
    node = wrapper(tree, directory)
    ran = subprocess.run(
        [*in_namespace(tree), str(node), "-e", "fetch; process.stdout.write(process.version)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if ran.returncode != 0:
        raise Unavailable(f"Debian's node 18 does not run here: {ran.stderr.strip()[-300:]}")
    return ran.stdout
