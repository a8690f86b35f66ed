"""The ``/_next/static`` fast path: the build's immutable assets served from memory.

Next.js serves these files from disk on its single JavaScript thread; the gateway can answer
them without a round trip. The set is loaded from ``<next dir>/.next/static`` into memory, each
text asset also precompressed with gzip (and brotli when the ``brotli`` package is installed;
brotli at quality 11 is slow, so it is added in the background after the set is live).

Safety: only files found by walking the static directory are ever served, keyed by their URL
path. A request path is never joined to a filesystem path, so ``..``, ``%2e%2e`` or ``%2f``
cannot reach outside. A symlink that resolves outside the directory is refused outright (404
from the gateway, not passed to Next.js).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import gzip
import logging
import mimetypes
import os
from dataclasses import dataclass
from urllib.parse import unquote

try:
    import brotli
except ImportError:  # optional: gzip only
    brotli = None

log = logging.getLogger("gateway.static")

PREFIX = "/_next/static/"
CACHE_CONTROL = "public, max-age=31536000, immutable"  # what Next.js sends for these files
# Types that compress well; images and fonts like woff2 are already compressed.
_TEXT_TYPES = {
    ".js": "application/javascript; charset=UTF-8",
    ".mjs": "application/javascript; charset=UTF-8",
    ".css": "text/css; charset=UTF-8",
    ".json": "application/json; charset=UTF-8",
    ".map": "application/json; charset=UTF-8",
    ".txt": "text/plain; charset=UTF-8",
    ".html": "text/html; charset=UTF-8",
    ".svg": "image/svg+xml",
    ".xml": "application/xml",
    ".wasm": "application/wasm",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
}
_BINARY_TYPES = {
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
}
_MIN_COMPRESS = 256  # below this the headers outweigh the savings


@dataclass(frozen=True)
class Representation:
    body: bytes
    etag: str
    encoding: str | None  # None = identity


@dataclass(frozen=True)
class Asset:
    content_type: str
    last_modified: str
    identity: Representation
    gzip: Representation | None = None
    br: Representation | None = None


def _content_type(name: str) -> tuple[str, bool]:
    ext = os.path.splitext(name)[1].lower()
    if ext in _TEXT_TYPES:
        return _TEXT_TYPES[ext], True
    if ext in _BINARY_TYPES:
        return _BINARY_TYPES[ext], False
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return guessed, guessed.startswith("text/")


def parse_accept_encoding(header: str) -> dict[str, float]:
    """``gzip;q=0.8, br`` -> ``{"gzip": 0.8, "br": 1.0}`` (RFC 9110 §12.5.3)."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        codings[name] = q
    return codings


def choose(asset: Asset, accept_encoding: str) -> Representation:
    """The best representation the client accepts: brotli, then gzip, then identity."""
    if not accept_encoding:
        return asset.identity
    codings = parse_accept_encoding(accept_encoding)
    star = codings.get("*", 0.0)
    for rep in (asset.br, asset.gzip):
        if rep is not None and codings.get(rep.encoding or "", star) > 0:
            return rep
    return asset.identity


def etag_matches(if_none_match: str, etags: list[str]) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/"x"`` matches ``"x"``."""
    if if_none_match.strip() == "*":
        return True
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return any(tag.removeprefix("W/") in wanted for tag in etags)


def unsafe_path(decoded: str) -> bool:
    """A path no file of ours can have: traversal, backslashes, NUL, empty segments."""
    segments = decoded[len(PREFIX) :].split("/")
    return "\\" in decoded or "\x00" in decoded or any(s in ("", ".", "..") for s in segments)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


class StaticAssets:
    """The current build's static files, looked up by URL path.

    :meth:`load` (blocking: run it in a thread) reads a build; :meth:`lookup` is what the proxy
    calls per request. A new set replaces the old one at once, so a lookup never sees half a
    build.
    """

    def __init__(
        self,
        next_dir: str,
        max_file_size: int,
        max_total_size: int,
        compress: bool,
        keep_builds: int = 0,
    ) -> None:
        self.set_release(next_dir)
        self.keep_builds = keep_builds
        # Skew protection: the sets of the builds served before this one, newest first, so a
        # tab opened before a reload still loads its chunks (hashed names never collide).
        self._previous: collections.deque[tuple[str | None, dict[str, Asset]]] = collections.deque(
            maxlen=keep_builds or None
        )
        self.max_file_size = max_file_size
        self.max_total_size = max_total_size
        self.compress = compress
        self.build_id: str | None = None
        self._assets: dict[str, Asset] = {}
        self._refused: frozenset[str] = frozenset()
        self._bytes = 0
        self._reloading: asyncio.Future[None] | None = None

    # -- per request --------------------------------------------------------------------------

    def set_release(self, next_dir: str) -> None:
        """Read builds from ``next_dir`` from now on (a reload switched releases)."""
        self.root = os.path.join(next_dir, ".next", "static")
        self.build_id_path = os.path.join(next_dir, ".next", "BUILD_ID")

    def lookup(self, path: str) -> Asset | None:
        name = unquote(path)
        asset = self._assets.get(name)
        if asset is None and self._previous:
            for _, assets in self._previous:
                asset = assets.get(name)
                if asset is not None:
                    break
        return asset

    def refused(self, path: str) -> bool:
        """True for paths the gateway answers 404 itself instead of passing them to Next."""
        decoded = unquote(path)
        if unsafe_path(decoded):
            return True
        return any(decoded == r or decoded.startswith(r + "/") for r in self._refused)

    def snapshot(self) -> dict[str, object]:
        return {
            "build_id": self.build_id,
            "previous_builds": [build for build, _ in self._previous],
            "files": len(self._assets),
            "bytes": self._bytes,
            "brotli": brotli is not None and self.compress,
        }

    # -- loading ------------------------------------------------------------------------------

    def read_build_id(self) -> str | None:
        try:
            with open(self.build_id_path, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def load(self) -> tuple[dict[str, Asset], frozenset[str], str | None, int]:
        """Read the build into a new set (blocking). Returns it; :meth:`publish` installs it."""
        build_id = self.read_build_id()
        assets: dict[str, Asset] = {}
        refused: set[str] = set()
        total = 0
        root = os.path.realpath(self.root)
        if not os.path.isdir(root):
            return assets, frozenset(), build_id, 0
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in dirnames:  # not descended into when they are symlinks
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and not _inside(os.path.realpath(full), root):
                    url = PREFIX + os.path.relpath(full, root).replace(os.sep, "/")
                    log.warning("refusing %s/: a symlink out of the static directory", url)
                    refused.add(url)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                url = PREFIX + os.path.relpath(full, root).replace(os.sep, "/")
                real = os.path.realpath(full)
                if not _inside(real, root):
                    log.warning("refusing %s: a symlink out of the static directory", url)
                    refused.add(url)
                    continue
                try:
                    st = os.stat(real)
                    if st.st_size > self.max_file_size or total + st.st_size > self.max_total_size:
                        continue  # left to Next.js
                    with open(real, "rb") as f:
                        body = f.read()
                except OSError as e:
                    log.warning("cannot read %s: %s", full, e)
                    continue
                total += len(body)
                assets[url] = self._asset(name, body, st.st_mtime_ns)
        return assets, frozenset(refused), build_id, total

    def _asset(self, name: str, body: bytes, mtime_ns: int) -> Asset:
        content_type, compressible = _content_type(name)
        # The weak ETag Next.js itself sends for this file (npm `etag`: size and mtime in ms,
        # rounded as Node's fs.Stats does, in hex), so a cache revalidates the same way whichever
        # of the two served it. Weak, it stays the same for the compressed representations
        # (RFC 9110 §8.8.1).
        tag = f'W/"{len(body):x}-{round(mtime_ns / 1_000_000):x}"'
        gz = None
        if self.compress and compressible and len(body) >= _MIN_COMPRESS:
            packed = gzip.compress(body, compresslevel=9, mtime=0)
            if len(packed) < len(body) * 0.95:
                gz = Representation(packed, tag, "gzip")
        return Asset(
            content_type=content_type,
            last_modified=email.utils.formatdate(mtime_ns / 1e9, usegmt=True),
            identity=Representation(body, tag, None),
            gzip=gz,
        )

    def with_brotli(self, assets: dict[str, Asset]) -> dict[str, Asset]:
        """Copies of ``assets`` with a brotli representation where it pays (blocking, slow)."""
        out = {}
        for url, asset in assets.items():
            if brotli is not None and asset.gzip is not None:
                packed = brotli.compress(asset.identity.body, quality=11)
                br = Representation(packed, asset.identity.etag, "br")
                asset = dataclasses.replace(asset, br=br)
            out[url] = asset
        return out

    def publish(
        self, assets: dict[str, Asset], refused: frozenset[str], build_id: str | None, total: int
    ) -> None:
        if self.keep_builds and self._assets and build_id != self.build_id:
            self._previous.appendleft((self.build_id, self._assets))
        self._assets, self._refused, self.build_id, self._bytes = assets, refused, build_id, total

    async def reload(self) -> None:
        """Load the build in a thread and publish it; then add brotli in the background."""
        loop = asyncio.get_running_loop()
        assets, refused, build_id, total = await loop.run_in_executor(None, self.load)
        self.publish(assets, refused, build_id, total)
        log.info(
            "static fast path: %d files, %.1f MiB from %s (build %s)",
            len(assets),
            total / 2**20,
            self.root,
            build_id,
        )
        if self.compress and brotli is not None and assets:
            with_br = await loop.run_in_executor(None, self.with_brotli, assets)
            if self.build_id == build_id:  # a newer build may have replaced it meanwhile
                self.publish(with_br, refused, build_id, total)

    async def reload_if_changed(self) -> None:
        """Reload when the build on disk is not the one in memory (the child restarted)."""
        if self._reloading is not None and not self._reloading.done():
            return
        if self._assets and self.read_build_id() == self.build_id:
            return
        self._reloading = asyncio.ensure_future(self.reload())
        await self._reloading
