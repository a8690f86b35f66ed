"""Chromium for the browser tests: one for this folder, checked before anything else is built or
started (autouse), so a machine without it skips them with one line on how to install it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require
from playwright.sync_api import sync_playwright
from support.browser import ARGS, ARTIFACTS, CHROMIUM


# Package scope: Playwright's sync API runs an event loop while it is open, and the tests
# after this folder (asyncio.run in integration/) must not find one running.
@pytest.fixture(scope="package", autouse=True)
def browser() -> Iterator[Any]:
    require(
        os.path.exists(CHROMIUM),
        f"chromium not found at {CHROMIUM} (browser tests)",
        "apt-get install chromium, or set GATEWAY_TEST_CHROMIUM to a Chromium binary",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
