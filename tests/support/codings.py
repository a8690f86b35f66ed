"""Content codings as a client undoes them."""

from __future__ import annotations

import gzip

import brotli


def decode(coding: str | None, body: bytes) -> bytes:
    """``body`` without its ``Content-Encoding`` (br, gzip or none)."""
    if coding == "br":
        return brotli.decompress(body)  # type: ignore[no-any-return]
    if coding == "gzip":
        return gzip.decompress(body)
    assert coding is None, coding
    return body
