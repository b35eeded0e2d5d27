"""Browser tests' shared parts: Debian's Chromium under Playwright, screenshots, login.

Playwright drives /usr/bin/chromium (`executable_path`); it never downloads a browser.
Without Chromium or Playwright the tests skip with the reason, and fail under CI=true.
Screenshots go under the test's tmp dir and are copied to test-artifacts/screenshots/ at
the repository root.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_env import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "screenshots"
# Bound on each browser wait, in ms; never reached when all is well.
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        skip_or_fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[dev]')")
        raise
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Full-page screenshots, kept under tmp_path and copied to test-artifacts/."""

    def __init__(self, tmp_path: Path, test_name: str) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        self.test_name = test_name
        self.taken: list[Path] = []

    def __call__(self, page: Any, step: str) -> None:
        path = self.dir / f"{self.test_name}-{len(self.taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ARTIFACTS / path.name)
        self.taken.append(path)


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Shots:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name.removeprefix("test_"))
    return Shots(tmp_path, name)


def login(page: Any, url: str, token: str) -> None:
    page.goto(url + "/ui")
    assert "/ui/login" in page.url  # no session: the login page, not data
    page.fill("#token", token)
    page.click("button:has-text('Log in')")
    page.wait_for_url(url + "/ui", timeout=WAIT_MS)
