"""Fixtures of the web console's tests: one Chromium for the session, a fresh browser context
(its own sessionStorage) per page, and a check that no page raised an uncaught error or had
something blocked by the Content-Security-Policy.

``browser`` skips (or fails under ``CI=true``) when Playwright or Debian's Chromium is missing;
Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from console_harness import CHROMIUM, VIEWPORT, launch_browser


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium, launched once per test session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    manager = sync_playwright().start()
    try:
        chromium = launch_browser(manager)
    except Exception as e:
        manager.stop()
        _unavailable(f"cannot launch {CHROMIUM}: {e}")
    yield chromium
    chromium.close()
    manager.stop()


class PageProblems:
    """Uncaught errors and CSP violations seen on the pages of one test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")


@pytest.fixture
def new_page(browser) -> Iterator[Any]:
    """Makes pages, each in a fresh context (a new tab's sessionStorage); the test fails if
    any of them had an uncaught script error or a CSP violation."""
    problems = PageProblems()
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return problems.watch(context.new_page())

    yield make
    for context in contexts:
        context.close()
    assert not problems.errors, "\n".join(problems.errors)
