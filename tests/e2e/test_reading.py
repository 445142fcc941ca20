"""Reading in the browser, two people: where the unread messages start, the
sidebar's unread counts across tabs, the title badge and one desktop
notification per message however many tabs are open."""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.chat import LIVE_MS, api_session, general_id, post
from tests.e2e.conftest import VIEWPORT
from tests.support import result, rpc

pytestmark = pytest.mark.browser

#: Records every `new Notification(...)` the page makes, in place of the real one.
CAPTURE_NOTIFICATIONS = """
(() => {
    const Real = window.Notification;
    window.__notifications = [];
    class Recorded extends Real {
        constructor(title, options = {}) {
            super(title, options);
            window.__notifications.push({ title, body: options.body || "" });
        }
    }
    window.Notification = Recorded;
})();
"""


def sign_in(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("login-input").fill("demo")
    page.get_by_test_id("password-input").fill("demo")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("channel-title")).to_have_text("general")


def channel_item(page: Page, name: str):
    return page.locator(f"[data-testid=channel-item][data-channel-name='{name}']")


def notifications(page: Page) -> list[dict]:
    return page.evaluate("window.__notifications")


def test_unread_line_counts_title_and_one_notification(browser, chat_url):
    admin = api_session(chat_url, "admin")
    general = general_id(chat_url, admin)
    demo = api_session(chat_url, "demo")
    demo_partner = result(rpc(chat_url, "/web/session/get_session_info", {}, session=demo))["partner_id"]
    welcome = next(c for c in result(rpc(chat_url, "/mail/init_messaging", {}, session=demo))["channels"]
                   if c["id"] == general)["last_message_id"]
    result(rpc(chat_url, "/mail/channel/set_last_seen_message",
               {"channel_id": general, "last_message_id": welcome}, session=demo))
    random = result(rpc(chat_url, "/mail/channel/create", {"name": "random"}, session=admin))
    result(rpc(chat_url, "/mail/channel/add_members",
               {"channel_id": random["id"], "partner_ids": [demo_partner]}, session=admin))
    post(chat_url, admin, general, "first unread")
    post(chat_url, admin, general, "second unread")

    context = browser.new_context(viewport=VIEWPORT, permissions=["notifications"])
    try:
        context.add_init_script(CAPTURE_NOTIFICATIONS)
        tab1 = context.new_page()
        sign_in(tab1, chat_url)
        # The line sits right above the first message demo had not seen.
        separator = tab1.get_by_test_id("unread-separator")
        expect(separator).to_have_count(1)
        following = separator.locator("xpath=following-sibling::*[@data-testid='message'][1]")
        expect(following).to_contain_text("first unread")

        tab2 = context.new_page()  # signed in already: the context shares the session cookie
        tab2.goto(chat_url)
        expect(tab2.get_by_test_id("channel-title")).to_have_text("general")
        post(chat_url, admin, random["id"], "over <b>here</b>")
        for tab in (tab1, tab2):
            expect(channel_item(tab, "random").get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)
            expect(tab).to_have_title("(1) imbus chat")
        # Both tabs heard the message; only the polling tab showed it on the desktop.
        shown = notifications(tab1) + notifications(tab2)
        assert [n["title"] for n in shown] == ["random"]
        assert shown[0]["body"] == "Mitchell Admin: over here"

        tab1.bring_to_front()
        channel_item(tab1, "random").click()
        expect(tab1.get_by_test_id("messages")).to_contain_text("over here")
        expect(channel_item(tab2, "random").get_by_test_id("unread-badge")).to_have_count(0, timeout=LIVE_MS)
        expect(tab2).to_have_title("imbus chat")
        # One's own messages neither count nor notify.
        tab1.get_by_test_id("composer-input").fill("mine")
        tab1.get_by_test_id("composer-input").press("Enter")
        expect(tab2.get_by_test_id("messages").get_by_text("mine")).to_have_count(0)
        expect(channel_item(tab2, "random").get_by_test_id("unread-badge")).to_have_count(0)
        assert len(notifications(tab1) + notifications(tab2)) == 1
    finally:
        context.close()
