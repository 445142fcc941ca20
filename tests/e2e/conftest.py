"""Fixtures for the browser tests: the chat application with its demo data,
served over real HTTP, and a headless Chromium driven by Playwright.

The browser is Debian's ``/usr/bin/chromium`` rather than one downloaded by
``playwright install``, so the suite runs on machines without internet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chat_app(request, database_url):
    """The demo chat (admin/admin, demo/demo, #general) on its own database;
    ``@pytest.mark.chat_options(websocket=False)`` and the like change its
    settings."""
    from mail.app import create_app
    from mail.demo_data import install_demo_data

    marker = request.node.get_closest_marker("chat_options")
    options = {"secret_key": "e2e-tests", "timeout": 5.0, **(marker.kwargs if marker else {})}
    app = create_app(database_url, **options)
    try:
        install_demo_data(app.database)
        yield app
    finally:
        app.close()


@pytest.fixture
def chat_url(chat_app, serve) -> str:
    """The demo chat, served over HTTP."""
    return serve(chat_app).url


@pytest.fixture
def context(browser) -> Iterator:
    """One browser profile (shared cookies and BroadcastChannels, as the tabs
    of one person) whose pages must raise no JavaScript error."""
    context = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}")))
    yield context
    context.close()
    assert not errors, "the page raised JavaScript errors:\n" + "\n".join(errors)


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored), for a human to look at after a run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def open_page(browser, chat_url) -> Iterator[Callable]:
    """Open the chat in a fresh browser context (its own cookies, as a second
    person on another computer) at the login screen.

    Uncaught JavaScript errors fail the test: a page that throws is broken
    even when the assertions happen to pass.
    """
    contexts = []
    errors: list[str] = []

    def open_(viewport: dict = VIEWPORT):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.goto(chat_url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, "the page raised JavaScript errors:\n" + "\n".join(errors)


@pytest.fixture
def login(open_page) -> Callable:
    """A page logged in through the login form, showing the chat."""
    from playwright.sync_api import expect

    def login_(username: str, password: str):
        page = open_page()
        page.get_by_test_id("login-input").fill(username)
        page.get_by_test_id("password-input").fill(password)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("chat-app")).to_be_visible()
        expect(page.get_by_test_id("channel-title")).to_have_text("general")
        return page

    return login_
