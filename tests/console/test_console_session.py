"""The web console's session in real Chromium, against an engine whose sessions last 8 s:
expiry returns to the login form saying why, a stale token is refused on load, a logout in
one tab ends the others, and wrong passwords are rate-limited (429) with a countdown.

The rate-limit test runs last: it locks logins from 127.0.0.1 for the engine's minute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from console_harness import EngineProcess, cleanup, log_in, scratch_dir
from playwright.sync_api import expect

TTL = 8
TOKEN = "vdsmlike.console.token"


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    """An engine without hosts whose sessions expire after :data:`TTL` seconds."""
    base = scratch_dir("vl-session-")
    running = EngineProcess(base, f"\n[api]\nsession_ttl = {TTL}\n")
    try:
        running.start()
        yield running
    finally:
        running.stop()
        cleanup(base)


def login_message(page: Any) -> Any:
    """The login form's message."""
    return page.locator("#login-message")


def test_an_expired_session_returns_to_the_login_form(engine, new_page):
    """When the session expires, the page drops its token and shows the login form saying the
    session expired; logging in again works."""
    page = new_page()
    log_in(page, engine.url, engine.password)
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN}')")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=(TTL + 5) * 1000)
    expect(login_message(page)).to_have_text("Your session expired. Log in again.")
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN}')") is None
    assert page.get_by_role("table", name="Hosts").count() == 0
    log_in(page, engine.url, engine.password)


def test_a_stale_token_on_load_asks_for_a_login(engine, new_page):
    """A page opened with a token the engine no longer knows shows the login form, saying the
    session is no longer valid."""
    page = new_page()
    page.add_init_script(f"sessionStorage.setItem('{TOKEN}', 'stale-token-0123456789abcdef')")
    page.goto(engine.url)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(login_message(page)).to_have_text(re.compile("no longer valid"))


def test_logging_out_ends_the_session_in_every_tab(engine, new_page):
    """Two tabs share a session (the second resumed with the first's token): logging out in
    one sends the other back to the login form, saying it was logged out."""
    first = new_page()
    log_in(first, engine.url, engine.password)
    token = first.evaluate(f"sessionStorage.getItem('{TOKEN}')")
    second = new_page()
    second.add_init_script(f"sessionStorage.setItem('{TOKEN}', {token!r})")
    second.goto(engine.url)
    expect(second.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    first.get_by_role("button", name="Log out").click()
    expect(login_message(first)).to_have_text("You logged out.")
    expect(login_message(second)).to_have_text("You were logged out. Log in again.")
    expect(second.get_by_role("heading", name="Log in")).to_be_visible()


def test_the_login_form_works_from_the_keyboard(engine, new_page):
    """The user name field has the focus on load; Tab reaches the password, Enter logs in, and
    the dashboard's heading takes the focus; Tab then moves through its links and buttons."""
    page = new_page()
    page.goto(engine.url)
    expect(page.get_by_label("User name")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(engine.password)
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", name="Dashboard", level=1)
    expect(heading).to_be_focused()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.tagName")
    assert focused in ("A", "BUTTON", "SUMMARY", "INPUT", "SELECT")


def test_wrong_passwords_are_refused_then_rate_limited(engine, new_page):
    """Each wrong password says so; after five, the engine answers 429 and the form says how
    long to wait, counting down, with the button disabled meanwhile."""
    page = new_page()
    page.goto(engine.url)
    button = page.get_by_role("button", name="Log in")
    for attempt in range(5):
        page.get_by_label("Password").fill(f"wrong-{attempt}")
        button.click()
        expect(login_message(page)).to_have_text("Wrong user name or password.")
        expect(button).to_be_enabled()
    page.get_by_label("Password").fill(engine.password)
    button.click()
    message = login_message(page)
    expect(message).to_have_text(re.compile(r"^Too many failed logins, retry in \d+ s\.$"))
    expect(button).to_be_disabled()
    first = int(re.search(r"\d+", message.text_content()).group())
    assert 1 <= first <= 60
    expect(message).not_to_have_text(f"Too many failed logins, retry in {first} s.", timeout=3000)
    later = int(re.search(r"\d+", message.text_content()).group())
    assert later < first
    assert page.get_by_role("heading", name="Log in").is_visible()
