"""Helpers for the tests against a real `next start` (the shared `next_gateway` fixture lives
in tests/conftest.py)."""

from __future__ import annotations

from support.procs import GatewayProcess


def direct_url(gw: GatewayProcess, path: str) -> str:
    """The same path on the Next.js child itself, bypassing the gateway."""
    state = gw.ready_state()
    assert state is not None
    return f"http://127.0.0.1:{state['next']['port']}{path}"


# The headers Next.js sends with a /_next/static or public/ file; the gateway's static path
# must send the same ones.
STATIC_HEADERS = (
    "cache-control",
    "accept-ranges",
    "last-modified",
    "etag",
    "content-type",
    "content-length",
    "vary",
)
