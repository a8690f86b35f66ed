"""The ``/_next/static`` fast path: the build's immutable assets served from memory.

Next.js serves these files from disk on its single JavaScript thread; the gateway can answer
them without a round trip. The set is loaded from ``<next dir>/.next/static`` into memory, each
text asset also precompressed with gzip (and brotli when the ``brotli`` package is installed;
brotli at quality 11 is slow, so it is added in the background after the set is live).

A standalone build's ``server.js`` has neither ``.next/static`` nor ``public/`` beside it (Next
leaves them in the project and asks for a copy step): then the gateway is the only server of
those files (:attr:`StaticSources.authoritative`), loads ``public/`` too, and answers byte
ranges itself, since the child cannot.

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

from gateway.proxy.compression import etag_matches as etag_matches  # re-exported: tests
from gateway.proxy.compression import negotiate, variant_etag
from gateway.proxy.http11 import date_field

try:
    import brotli
except ImportError:  # optional: gzip only
    brotli = None

log = logging.getLogger("gateway.static")

PREFIX = "/_next/static/"
CACHE_CONTROL = "public, max-age=31536000, immutable"  # what Next.js sends for these files
PUBLIC_CACHE_CONTROL = "public, max-age=0"  # and for public/ files
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
    cache_control: str = CACHE_CONTROL
    heads: dict[str | None, bytes] = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """200 heads by encoding, built by :func:`whole_head` (not copied by ``replace``)."""


def whole_head(asset: Asset, rep: Representation) -> bytes:
    """The head of a 200 carrying ``rep`` whole, up to its last field (CRLF-terminated, no
    Connection, no blank line), as the handler's general path writes it: built once per
    representation, with only the Date field added per second. Building it per request from
    HTTPHeaders (and Tornado's write_headers) was about a quarter of a static response's CPU."""
    fields = asset.heads.get(rep.encoding)
    if fields is None:
        encoding = f"Content-Encoding: {rep.encoding}\r\n" if rep.encoding else ""
        fields = asset.heads[rep.encoding] = (
            f"HTTP/1.1 200 OK\r\nCache-Control: {asset.cache_control}\r\n"
            f"Accept-Ranges: bytes\r\nLast-Modified: {asset.last_modified}\r\n"
            f"ETag: {rep.etag}\r\nContent-Type: {asset.content_type}\r\n"
            f"Vary: Accept-Encoding\r\n{encoding}Content-Length: {len(rep.body)}\r\n"
        ).encode("latin-1")
    return fields + date_field()


@dataclass(frozen=True)
class StaticSources:
    """Where one build's files are."""

    static_dir: str
    """Served at ``/_next/static/``."""
    build_id_file: str
    public_dir: str | None = None
    """Served at ``/``: ``public/`` of a standalone build that has no copy of it."""
    authoritative: bool = False
    """The child cannot serve these files (a standalone build): byte ranges are answered here
    instead of being left to it."""


def _content_type(name: str) -> tuple[str, bool]:
    ext = os.path.splitext(name)[1].lower()
    if ext in _TEXT_TYPES:
        return _TEXT_TYPES[ext], True
    if ext in _BINARY_TYPES:
        return _BINARY_TYPES[ext], False
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return guessed, guessed.startswith("text/")


def choose(asset: Asset, accept_encoding: str) -> Representation:
    """The representation the client accepts best (compression.negotiate: q-values, then
    brotli, then gzip, then identity)."""
    if not accept_encoding or (asset.br is None and asset.gzip is None):
        return asset.identity
    available = tuple(rep.encoding for rep in (asset.br, asset.gzip) if rep is not None)
    coding = negotiate(accept_encoding, available)  # type: ignore[arg-type]
    if coding == "br" and asset.br is not None:
        return asset.br
    if coding == "gzip" and asset.gzip is not None:
        return asset.gzip
    return asset.identity


def unsafe_path(decoded: str) -> bool:
    """A path no file of ours can have: traversal, backslashes, NUL, empty segments."""
    segments = decoded[len(PREFIX) :].split("/")
    return "\\" in decoded or "\x00" in decoded or any(s in ("", ".", "..") for s in segments)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range ``bytes=first-last`` (or ``first-``, ``-suffix``) asks for, as inclusive
    offsets, or None when the header is to be ignored and the whole file sent (several ranges,
    another unit, a syntax error: RFC 9110 §14.2 lets a server ignore Range). Raises
    ValueError when no byte of the range exists (416, RFC 9110 §15.5.17)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first or last):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise ValueError("the range starts past the end")
    return start, min(int(last), size - 1) if last else size - 1


def _settle(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class StaticAssets:
    """The current build's static files, looked up by URL path.

    :meth:`load` (blocking: run it in a thread) reads a build; :meth:`lookup` is what the proxy
    calls per request. A new set replaces the old one at once, so a lookup never sees half a
    build.
    """

    def __init__(
        self,
        sources: StaticSources,
        max_file_size: int,
        max_total_size: int,
        compress: bool,
        keep_builds: int = 0,
    ) -> None:
        self.sources = sources
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
        self._public_files = 0
        self._loading: asyncio.Future[None] | None = None
        self._wanted: str | None = None  # the build the newest reload reads

    # -- per request --------------------------------------------------------------------------

    def set_sources(self, sources: StaticSources) -> None:
        """Read builds from ``sources`` from now on (a reload switched releases)."""
        self.sources = sources

    @property
    def authoritative(self) -> bool:
        return self.sources.authoritative

    @property
    def serves_public(self) -> bool:
        return self._public_files > 0 or self.sources.public_dir is not None

    @property
    def loading(self) -> bool:
        """A new build's set is being read and not yet published."""
        return self._loading is not None and not self._loading.done()

    async def wait_loaded(self, timeout: float) -> None:
        """Until the set being read is published (at most ``timeout`` seconds)."""
        if self._loading is not None and not self._loading.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._loading), timeout)
            except TimeoutError:
                pass

    def lookup(self, path: str) -> Asset | None:
        name = unquote(path)
        asset = self._assets.get(name)
        # Old builds' chunks stay (skew protection); their public/ files do not.
        if asset is None and self._previous and name.startswith(PREFIX):
            for _, assets in self._previous:
                asset = assets.get(name)
                if asset is not None:
                    break
        return asset

    def refused(self, path: str) -> bool:
        """True for paths the gateway answers 404 itself instead of passing them to Next."""
        decoded = unquote(path)
        if decoded.startswith(PREFIX) and unsafe_path(decoded):
            return True
        return any(decoded == r or decoded.startswith(r + "/") for r in self._refused)

    def snapshot(self) -> dict[str, object]:
        return {
            "build_id": self.build_id,
            "previous_builds": [build for build, _ in self._previous],
            "files": len(self._assets),
            "public_files": self._public_files,
            "bytes": self._bytes,
            "authoritative": self.sources.authoritative,
            "brotli": brotli is not None and self.compress,
        }

    # -- loading ------------------------------------------------------------------------------

    def read_build_id(self) -> str | None:
        try:
            with open(self.sources.build_id_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def load(self) -> tuple[dict[str, Asset], frozenset[str], str | None, int]:
        """Read the build into a new set (blocking). Returns it; :meth:`publish` installs it."""
        sources = self.sources
        build_id = self.read_build_id()
        assets: dict[str, Asset] = {}
        refused: set[str] = set()
        skipped: list[str] = []
        total = self._walk(sources.static_dir, PREFIX, CACHE_CONTROL, assets, refused, skipped, 0)
        if sources.public_dir is not None:
            total = self._walk(
                sources.public_dir, "/", PUBLIC_CACHE_CONTROL, assets, refused, skipped, total
            )
        if skipped and sources.authoritative:
            log.warning(
                "%d file(s) over static.max_file_size or static.max_total_size are not served: "
                "a standalone server.js cannot serve them either (raise the limits)",
                len(skipped),
            )
        return assets, frozenset(refused), build_id, total

    def _walk(
        self,
        directory: str,
        prefix: str,
        cache_control: str,
        assets: dict[str, Asset],
        refused: set[str],
        skipped: list[str],
        total: int,
    ) -> int:
        """Add the files under ``directory`` as ``prefix + relative path``; returns the total."""
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            return total
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in dirnames:  # not descended into when they are symlinks
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and not _inside(os.path.realpath(full), root):
                    url = prefix + os.path.relpath(full, root).replace(os.sep, "/")
                    log.warning("refusing %s/: a symlink out of %s", url, directory)
                    refused.add(url)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                url = prefix + os.path.relpath(full, root).replace(os.sep, "/")
                real = os.path.realpath(full)
                if not _inside(real, root):
                    log.warning("refusing %s: a symlink out of %s", url, directory)
                    refused.add(url)
                    continue
                try:
                    st = os.stat(real)
                    if st.st_size > self.max_file_size or total + st.st_size > self.max_total_size:
                        skipped.append(url)
                        continue  # left to Next.js
                    with open(real, "rb") as f:
                        body = f.read()
                except OSError as e:
                    log.warning("cannot read %s: %s", full, e)
                    continue
                total += len(body)
                asset = self._asset(name, body, st.st_mtime_ns)
                if cache_control != asset.cache_control:
                    asset = dataclasses.replace(asset, cache_control=cache_control)
                assets[url] = asset
        return total

    def _asset(self, name: str, body: bytes, mtime_ns: int) -> Asset:
        content_type, compressible = _content_type(name)
        # The weak ETag Next.js itself sends for this file (npm `etag`: size and mtime in ms,
        # rounded as Node's fs.Stats does, in hex), so a cache revalidates the same way whichever
        # of the two served it. The compressed representations have their own (``-gzip``,
        # ``-br`` inside the quotes), as the proxied path's do: a cache that stores several
        # variants tells them apart by ETag.
        tag = f'W/"{len(body):x}-{round(mtime_ns / 1_000_000):x}"'
        gz = None
        if self.compress and compressible and len(body) >= _MIN_COMPRESS:
            packed = gzip.compress(body, compresslevel=9, mtime=0)
            if len(packed) < len(body) * 0.95:
                gz = Representation(packed, variant_etag(tag, "gzip") or tag, "gzip")
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
                br = Representation(
                    packed, variant_etag(asset.identity.etag, "br") or asset.identity.etag, "br"
                )
                asset = dataclasses.replace(asset, br=br)
            out[url] = asset
        return out

    def publish(
        self, assets: dict[str, Asset], refused: frozenset[str], build_id: str | None, total: int
    ) -> None:
        if self.keep_builds and self._assets and build_id != self.build_id:
            self._previous.appendleft((self.build_id, self._assets))
        self._assets, self._refused, self.build_id, self._bytes = assets, refused, build_id, total
        self._public_files = sum(1 for url in assets if not url.startswith(PREFIX))

    async def reload(self) -> None:
        """Load the build in a thread and publish it; then add brotli in the background."""
        loop = asyncio.get_running_loop()
        loading = self._loading
        try:
            assets, refused, build_id, total = await loop.run_in_executor(None, self.load)
        except BaseException:
            _settle(loading)  # nobody waits for a set that will not come
            raise
        if build_id != self._wanted:
            return  # a newer build was asked for meanwhile: its own reload publishes it
        self.publish(assets, refused, build_id, total)
        _settle(loading)
        log.info(
            "static fast path: %d files, %.1f MiB from %s%s (build %s)",
            len(assets),
            total / 2**20,
            self.sources.static_dir,
            f" and {self.sources.public_dir}" if self.sources.public_dir else "",
            build_id,
        )
        # Brotli at quality 11 is slow: the set above is live meanwhile, and a newer build may
        # be read and published before this finishes.
        if self.compress and brotli is not None and assets:
            with_br = await loop.run_in_executor(None, self.with_brotli, assets)
            if self.build_id == build_id:
                self.publish(with_br, refused, build_id, total)

    def changed(self) -> bool:
        """True when the build on disk is not the one in memory or being read (the child
        restarted, or a reload switched releases): then :meth:`reload_if_changed` has work to
        do, and until the new set is published :attr:`loading` is true (a request for one of
        its files can wait for it instead of missing it)."""
        on_disk = self.read_build_id()
        if self.loading:
            if on_disk == self._wanted:
                return False
        elif self._assets and on_disk == self.build_id:
            return False
        self._wanted = on_disk
        if not self.loading:
            self._loading = asyncio.get_running_loop().create_future()
        return True

    async def reload_if_changed(self) -> None:
        """Reload when the build on disk is not the one in memory (the child restarted)."""
        if not self.loading and not self.changed():
            return
        await self.reload()
