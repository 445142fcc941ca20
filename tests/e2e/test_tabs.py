"""Two tabs of one person in one browser share one long-poll: the tabs elect
one of them to poll for both (mail/static/bus/crosstab.js), it relays what
it hears, and when its tab closes the other takes over.

The polls are counted from the browser's own network events, across both
pages, so the test sees what the server sees.
"""
from __future__ import annotations

import time
from typing import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.e2e.chat import LIVE_MS, api_session, general_id, last_message, post
from tests.e2e.conftest import VIEWPORT

pytestmark = pytest.mark.browser

POLL_PATH = "/longpolling/poll"
#: The e2e server answers a parked poll after 5 s: a few seconds of watching
#: see polls answered and sent again.
WATCH_MS = 7000
#: A closed leader says goodbye and another tab polls within the election
#: window (0.3 s); a leader that vanished silently is replaced after its
#: heartbeat times out (about 5 s).
TAKEOVER_S = 10.0


class PollWatch:
    """Every /longpolling/poll request of a browser context: which page sent
    it, and how many were in flight at once."""

    def __init__(self, context: BrowserContext) -> None:
        self.in_flight: set[Request] = set()
        self.max_in_flight = 0
        self.sent: list[Page] = []
        context.on("request", self._sent)
        context.on("requestfinished", self._ended)
        context.on("requestfailed", self._ended)

    def restart(self) -> None:
        """Count from now on."""
        self.in_flight.clear()
        self.max_in_flight = 0
        self.sent.clear()

    def _sent(self, request: Request) -> None:
        if not request.url.endswith(POLL_PATH) or request.frame.page.is_closed():
            return  # a late report of a poll that ended with its page
        # A closed page's poll ended with it, though it may never report it.
        self.in_flight = {sent for sent in self.in_flight if not sent.frame.page.is_closed()}
        self.in_flight.add(request)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        self.sent.append(request.frame.page)

    def _ended(self, request: Request) -> None:
        self.in_flight.discard(request)


@pytest.fixture
def context(browser) -> Iterator[BrowserContext]:
    """One browser profile (shared cookies and BroadcastChannels) whose pages
    must raise no JavaScript error."""
    context = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}")))
    yield context
    context.close()
    assert not errors, "the page raised JavaScript errors:\n" + "\n".join(errors)


def open_tab(context: BrowserContext, url: str) -> Page:
    """A tab of the chat; the session cookie logs it in."""
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_test_id("chat-app")).to_be_visible()
    expect(page.get_by_test_id("channel-title")).to_have_text("general")
    return page


def test_two_tabs_share_one_poll_and_hand_it_over_when_the_leader_closes(context, chat_url):
    watch = PollWatch(context)
    first = context.new_page()
    first.goto(chat_url)
    first.get_by_test_id("login-input").fill("demo")
    first.get_by_test_id("password-input").fill("demo")
    first.get_by_test_id("login-submit").click()
    expect(first.get_by_test_id("channel-title")).to_have_text("general")
    second = open_tab(context, chat_url)

    first.wait_for_timeout(WATCH_MS)
    assert len(watch.sent) >= 2, "polls were answered and sent again"
    assert watch.max_in_flight == 1, f"{watch.max_in_flight} polls in flight at once"
    pollers = set(watch.sent)
    assert len(pollers) == 1, "one tab polls for both"

    jane = api_session(chat_url, "jane")
    general = general_id(chat_url, jane)
    post(chat_url, jane, general, "Both of your tabs hear this")
    for page in (first, second):
        expect(last_message(page)).to_contain_text("Both of your tabs hear this", timeout=LIVE_MS)

    leader = pollers.pop()
    survivor = second if leader is first else first
    leader.close()
    watch.restart()  # the other tab polls only after an election that the close starts
    deadline = time.monotonic() + TAKEOVER_S
    while survivor not in watch.sent and time.monotonic() < deadline:
        survivor.wait_for_timeout(100)
    assert survivor in watch.sent, "the remaining tab took over the poll"

    post(chat_url, jane, general, "Still heard after the other tab closed")
    expect(last_message(survivor)).to_contain_text("Still heard after the other tab closed", timeout=LIVE_MS)
    survivor.wait_for_timeout(WATCH_MS)
    assert watch.max_in_flight == 1
    assert set(watch.sent) == {survivor}
