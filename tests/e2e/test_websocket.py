"""The chat over a WebSocket in a real browser, and its fall-back.

With the server's WebSocket on (the default), the page's bus client opens
one socket per browser at ``/websocket`` (the elected tab's) and never
long-polls; with it off (``--no-websocket``) the same page falls back to
long-polling and the chat works the same. Sockets and polls are counted
from the browser's own network events.
"""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import BrowserContext, Page, WebSocket, expect

from tests.e2e.chat import LIVE_MS, PollWatch, api_session, general_id, last_message, open_tab, post, send, sign_in_tab

pytestmark = pytest.mark.browser

SOCKET_PATH = "/websocket"
#: Long enough for a long-poll round (5 s here) to have ended and begun again.
WATCH_MS = 6000
TAKEOVER_S = 10.0


class SocketWatch:
    """Every WebSocket the pages of a browser context open to the chat."""

    def __init__(self, context: BrowserContext) -> None:
        self.sockets: list[tuple[Page, WebSocket]] = []
        self.subscribes: list[str] = []
        context.on("page", lambda page: page.on("websocket", lambda socket: self._opened(page, socket)))

    def _opened(self, page: Page, socket: WebSocket) -> None:
        if not socket.url.endswith(SOCKET_PATH):
            return
        self.sockets.append((page, socket))
        socket.on("framesent", lambda payload: self.subscribes.append(payload) if "subscribe" in str(payload) else None)

    def open(self) -> list[Page]:
        """The pages holding an open socket, one entry per socket."""
        return [page for page, socket in self.sockets if not socket.is_closed() and not page.is_closed()]


def test_two_tabs_share_one_websocket_and_hand_it_over(context, chat_url):
    polls, sockets = PollWatch(context), SocketWatch(context)
    first = sign_in_tab(context, chat_url, "demo")
    second = open_tab(context, chat_url)
    for page in (first, second):
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-transport", "websocket")
    first.wait_for_timeout(WATCH_MS)
    assert len(sockets.open()) == 1, "one socket for both tabs"
    assert polls.sent == [], "nobody long-polls while the socket works"
    assert sockets.subscribes, "the socket subscribed"

    jane = api_session(chat_url, "jane")
    general = general_id(chat_url, jane)
    post(chat_url, jane, general, "Heard over the socket")
    for page in (first, second):
        expect(last_message(page)).to_contain_text("Heard over the socket", timeout=LIVE_MS)

    [leader] = sockets.open()
    survivor = second if leader is first else first
    leader.close()
    deadline = time.monotonic() + TAKEOVER_S
    while sockets.open() != [survivor] and time.monotonic() < deadline:
        survivor.wait_for_timeout(100)
    assert sockets.open() == [survivor], "the remaining tab opened the socket"
    post(chat_url, jane, general, "Still heard after the other tab closed")
    expect(last_message(survivor)).to_contain_text("Still heard after the other tab closed", timeout=LIVE_MS)
    assert polls.sent == []


def test_two_people_chat_live_over_websockets(login):
    admin = login("admin", "admin")
    demo = login("demo", "demo")
    for page in (admin, demo):
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-transport", "websocket")
    polled: list[str] = []
    for page in (admin, demo):
        page.on("request", lambda request: polled.append(request.url) if "/longpolling/poll" in request.url else None)
    send(admin, "Hello over the socket")
    expect(last_message(demo)).to_contain_text("Hello over the socket", timeout=LIVE_MS)
    send(demo, "And back")
    expect(last_message(admin)).to_contain_text("And back", timeout=LIVE_MS)
    assert polled == []


@pytest.mark.chat_options(websocket=False)
def test_without_websocket_the_page_falls_back_to_long_polling(login):
    admin = login("admin", "admin")
    demo = login("demo", "demo")
    for page in (admin, demo):
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-transport", "longpolling")
        expect(page.get_by_test_id("connection-status")).to_have_attribute("title", "Connected (long-polling)")
    send(admin, "Hello without a socket")
    expect(last_message(demo)).to_contain_text("Hello without a socket", timeout=LIVE_MS)
    send(demo, "Still live")
    expect(last_message(admin)).to_contain_text("Still live", timeout=LIVE_MS)
