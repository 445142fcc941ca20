"""What the browser tests do in the chat: type and send like a person, read
the last message, and talk to the server as another client over JSON-RPC.

"Live" means within 2 s of the sender's post: the message travels through
the post route, PostgreSQL's NOTIFY, the dispatcher and the receiver's
parked long-poll before the receiving page renders it.
"""
from __future__ import annotations

import requests
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.support import result, rpc

LIVE_MS = 2000
POLL_PATH = "/longpolling/poll"


def send(page: Page, text: str) -> None:
    """Type like a person (so typing notifications fire) and press Enter."""
    composer = page.get_by_test_id("composer-input")
    composer.press_sequentially(text)
    composer.press("Enter")
    expect(composer).to_have_value("")


def last_message(page: Page):
    return page.get_by_test_id("messages").get_by_test_id("message").last


def api_session(url: str, login: str) -> requests.Session:
    """Another client of the same server, logged in over JSON-RPC."""
    session = requests.Session()
    result(rpc(url, "/web/session/authenticate", {"login": login, "password": login}, session=session))
    return session


def general_id(url: str, session: requests.Session) -> int:
    channels = result(rpc(url, "/mail/init_messaging", {}, session=session))["channels"]
    return next(channel["id"] for channel in channels if channel["name"] == "general")


def post(url: str, session: requests.Session, channel_id: int, body: str) -> dict:
    return result(rpc(url, "/mail/message/post", {
        "thread_model": "mail.channel", "thread_id": channel_id,
        "post_data": {"body": body, "message_type": "comment", "subtype_xmlid": "mail.mt_comment"},
    }, session=session))


def sign_in_tab(context: BrowserContext, url: str, login: str) -> Page:
    """A new tab of ``context`` signed in through the login form (password = login)."""
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("login-input").fill(login)
    page.get_by_test_id("password-input").fill(login)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("channel-title")).to_have_text("general")
    return page


def open_tab(context: BrowserContext, url: str) -> Page:
    """Another tab of ``context``; the session cookie logs it in."""
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_test_id("chat-app")).to_be_visible()
    expect(page.get_by_test_id("channel-title")).to_have_text("general")
    return page


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
