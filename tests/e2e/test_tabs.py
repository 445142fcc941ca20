"""Two tabs of one person in one browser share one long-poll: the tabs elect
one of them to poll for both (mail/static/bus/crosstab.js), it relays what
it hears, and when its tab closes the other takes over.

The server here has no WebSocket (``--no-websocket``), so the page falls
back to long-polling; tests/e2e/test_websocket.py has the same two tabs on
one socket. The polls are counted from the browser's own network events,
across both pages, so the test sees what the server sees.
"""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.e2e.chat import LIVE_MS, PollWatch, api_session, general_id, last_message, open_tab, post, sign_in_tab

pytestmark = pytest.mark.browser

#: The e2e server answers a parked poll after 5 s: a few seconds of watching
#: see polls answered and sent again.
WATCH_MS = 7000
#: A closed leader says goodbye and another tab polls within the election
#: window (0.3 s); a leader that vanished silently is replaced after its
#: heartbeat times out (about 5 s).
TAKEOVER_S = 10.0


@pytest.mark.chat_options(websocket=False)
def test_two_tabs_share_one_poll_and_hand_it_over_when_the_leader_closes(context, chat_url):
    watch = PollWatch(context)
    first = sign_in_tab(context, chat_url, "demo")
    second = open_tab(context, chat_url)
    for page in (first, second):
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-transport", "longpolling")

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
