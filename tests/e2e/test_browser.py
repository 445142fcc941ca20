"""The chat page in a real browser against the real server: two people log
in through the form in separate browser contexts and talk.

"Live" means within 2 s of the sender pressing Enter: the message travels
through the post route, PostgreSQL's NOTIFY, the dispatcher and the
receiver's parked long-poll before the receiving page renders it.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.chat import LIVE_MS, api_session, general_id, last_message, post, send
from tests.support import result, rpc

pytestmark = pytest.mark.browser

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def sidebar_item(page: Page, name: str):
    return page.get_by_test_id("sidebar").locator(f'[data-testid=channel-item][data-channel-name="{name}"]')


def test_login_refuses_a_wrong_password_and_logout_ends_the_session(open_page):
    page = open_page()
    expect(page.get_by_test_id("login-form")).to_contain_text("admin")
    page.get_by_test_id("login-input").fill("admin")
    page.get_by_test_id("password-input").fill("not the password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong login or password.")
    expect(page.get_by_test_id("chat-app")).to_be_hidden()

    page.get_by_test_id("password-input").fill("admin")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-user")).to_contain_text("Mitchell Admin")
    page.reload()
    expect(page.get_by_test_id("current-user")).to_contain_text("Mitchell Admin")
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-screen")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("login-screen")).to_be_visible()
    expect(page.get_by_test_id("chat-app")).to_be_hidden()


def test_two_people_talk_live_with_typing_indicator(login, chat_url, artifacts):
    admin = login("admin", "admin")
    demo = login("demo", "demo")
    expect(demo.get_by_test_id("member-count")).to_have_text("4 members")

    admin.get_by_test_id("composer-input").press_sequentially("Morning Marc! The new bus is live")
    expect(demo.get_by_test_id("typing-indicator")).to_have_text("Mitchell Admin is typing…", timeout=LIVE_MS)
    admin.get_by_test_id("composer-input").press("Enter")
    expect(last_message(demo)).to_contain_text("Morning Marc! The new bus is live", timeout=LIVE_MS)
    expect(demo.get_by_test_id("message-author").last).to_have_text("Mitchell Admin")
    expect(demo.get_by_test_id("typing-indicator")).to_have_text("", timeout=LIVE_MS)

    reply = demo.get_by_test_id("composer-input")
    reply.press_sequentially("Great news.")
    reply.press("Shift+Enter")
    reply.press_sequentially("Messages show up instantly here")
    expect(admin.get_by_test_id("typing-indicator")).to_have_text("Marc Demo is typing…", timeout=LIVE_MS)
    reply.press("Enter")
    expect(last_message(admin)).to_contain_text("Messages show up instantly here", timeout=LIVE_MS)
    assert "<br>" in last_message(admin).get_by_test_id("message-body").inner_html()

    # A third person, posting from another client, is heard by both pages.
    jane = api_session(chat_url, "jane")
    post(chat_url, jane, general_id(chat_url, jane), "Congrats! The dashboard already feels snappier.")
    for page in (admin, demo):
        expect(last_message(page)).to_contain_text("feels snappier", timeout=LIVE_MS)

    send(admin, "Perfect, let's ship it this afternoon")
    expect(last_message(demo)).to_contain_text("ship it this afternoon", timeout=LIVE_MS)
    send(demo, "Sounds good, I will tell the team")
    expect(last_message(admin)).to_contain_text("I will tell the team", timeout=LIVE_MS)
    # Consecutive messages of one author share a header.
    expect(demo.locator("[data-testid=message].grouped")).not_to_have_count(0)

    # Joel writes to Marc directly: a new conversation with an unread badge.
    joel = api_session(chat_url, "joel")
    marc = result(rpc(chat_url, "/mail/partner/search", {"term": "Marc Demo"}, session=joel))[0]
    chat = result(rpc(chat_url, "/mail/channel/get_or_create_chat", {"partner_ids": [marc["id"]]}, session=joel))
    post(chat_url, joel, chat["id"], "Can you review my slides before the demo?")
    expect(sidebar_item(demo, "Joel Willis").get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)

    # Jane opens a channel, invites Marc and posts: it shows up with its badge.
    launch = result(rpc(chat_url, "/mail/channel/create", {
        "name": "product-launch", "privacy": "private", "description": "Go-live checklist"}, session=jane))
    result(rpc(chat_url, "/mail/channel/add_members", {"channel_id": launch["id"], "partner_ids": [marc["id"]]},
               session=jane))
    post(chat_url, jane, launch["id"], "Checklist is ready for review")
    expect(sidebar_item(demo, "product-launch").get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)

    demo.get_by_test_id("member-count").click()
    expect(demo.get_by_test_id("member-list").get_by_test_id("member")).to_have_count(4)
    admin.get_by_test_id("composer-input").press_sequentially("See you")
    expect(demo.get_by_test_id("typing-indicator")).to_have_text("Mitchell Admin is typing…", timeout=LIVE_MS)
    admin.screenshot(path=str(artifacts / "conversation-admin.png"))
    demo.screenshot(path=str(artifacts / "conversation-demo.png"))


def test_hostile_bodies_are_shown_inert(login, chat_url, artifacts):
    admin = login("admin", "admin")
    demo = login("demo", "demo")

    # Typed in the composer, markup is text and shows exactly as typed.
    send(admin, HOSTILE)
    typed = last_message(demo)
    expect(typed.get_by_test_id("message-body")).to_have_text(HOSTILE, timeout=LIVE_MS)

    # Posted as HTML by another client, it reaches the page through the
    # server's sanitiser, the one path where a body is inserted as markup.
    joel = api_session(chat_url, "joel")
    posted = post(chat_url, joel, general_id(chat_url, joel), "<p>look</p>" + HOSTILE)
    as_html = demo.locator(f'[data-testid=message][data-message-id="{posted["id"]}"]')
    expect(as_html).to_contain_text("look", timeout=LIVE_MS)
    # Let the browser try the broken image, so an onerror handler would have run.
    demo.wait_for_function("() => [...document.querySelectorAll('[data-testid=message-body] img')]"
                           ".every((img) => img.complete)")

    for page in (admin, demo):
        assert page.evaluate("typeof window.__pwned") == "undefined"
        messages = page.get_by_test_id("messages")
        expect(messages.locator("script")).to_have_count(0)
        expect(messages.locator("[onerror]")).to_have_count(0)
    demo.screenshot(path=str(artifacts / "hostile-body.png"))


def test_unread_badges_and_starting_a_chat(login, artifacts):
    admin = login("admin", "admin")
    demo = login("demo", "demo")

    # Admin starts a direct conversation by searching for Marc.
    admin.get_by_test_id("start-chat").click()
    admin.get_by_test_id("partner-search").fill("marc")
    admin.locator('[data-testid=partner-result][data-partner-name="Marc Demo"]').click()
    expect(admin.get_by_test_id("channel-title")).to_have_text("Marc Demo")
    expect(sidebar_item(admin, "Marc Demo")).to_have_attribute("aria-current", "page")

    # Marc, reading #general, gets the conversation with an unread counter.
    send(admin, "Got a minute?")
    chat = sidebar_item(demo, "Mitchell Admin")
    expect(chat.get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)
    send(admin, "About the release")
    expect(chat.get_by_test_id("unread-badge")).to_have_text("2", timeout=LIVE_MS)
    expect(sidebar_item(demo, "general").get_by_test_id("unread-badge")).to_have_count(0)
    demo.screenshot(path=str(artifacts / "unread-badge.png"))

    # Opening it shows the history and clears the badge; admin sees it read.
    chat.click()
    expect(demo.get_by_test_id("channel-title")).to_have_text("Mitchell Admin")
    expect(last_message(demo)).to_contain_text("About the release")
    expect(chat.get_by_test_id("unread-badge")).to_have_count(0)
    expect(admin.get_by_test_id("seen-status")).to_have_text("Seen", timeout=LIVE_MS)

    # A channel admin creates and adds Marc to: it appears for Marc, counts
    # unread messages while he is elsewhere, and the count survives a reload.
    admin.get_by_test_id("create-channel").click()
    admin.get_by_test_id("new-channel-name").fill("launch")
    admin.get_by_test_id("create-channel-submit").click()
    expect(admin.get_by_test_id("channel-title")).to_have_text("launch")
    admin.get_by_test_id("member-count").click()
    admin.get_by_test_id("add-members").click()
    admin.get_by_test_id("partner-search").fill("marc")
    admin.locator('[data-testid=partner-result][data-partner-name="Marc Demo"]').click()
    expect(admin.get_by_test_id("member-count")).to_have_text("2 members")
    expect(sidebar_item(demo, "launch")).to_be_visible(timeout=LIVE_MS)
    send(admin, "Launch checklist is in the description")
    launch_badge = sidebar_item(demo, "launch").get_by_test_id("unread-badge")
    expect(launch_badge).to_have_text("1", timeout=LIVE_MS)
    demo.reload()
    expect(sidebar_item(demo, "launch").get_by_test_id("unread-badge")).to_have_text("1")
    sidebar_item(demo, "launch").click()
    expect(last_message(demo)).to_contain_text("Launch checklist")
    expect(sidebar_item(demo, "launch").get_by_test_id("unread-badge")).to_have_count(0)
    admin.screenshot(path=str(artifacts / "channel-members.png"))


def test_older_history_loads_on_scroll_and_a_failed_send_keeps_the_text(login, chat_url):
    joel = api_session(chat_url, "joel")
    channel_id = general_id(chat_url, joel)
    for number in range(1, 41):
        post(chat_url, joel, channel_id, f"History line {number}")
    demo = login("demo", "demo")
    messages = demo.get_by_test_id("messages").get_by_test_id("message")
    expect(messages).to_have_count(30)
    expect(messages.last).to_contain_text("History line 40")

    # Scrolling to the top fetches the page before the oldest shown message.
    demo.get_by_test_id("messages").evaluate("(box) => { box.scrollTop = 0; }")
    expect(messages).to_have_count(41)
    expect(messages.first).to_contain_text("Welcome to #general")
    expect(demo.get_by_test_id("load-older")).to_have_count(0)

    # The server refuses an oversized body: the user is told and keeps the text.
    composer = demo.get_by_test_id("composer-input")
    composer.fill("x" * 70_000)
    composer.press("Enter")
    expect(demo.get_by_test_id("toast")).to_contain_text("bytes")
    expect(composer).to_be_enabled()
    assert len(composer.input_value()) == 70_000
    expect(messages).to_have_count(41)


def test_presence_dots_follow_people_logging_in_and_out(login):
    admin = login("admin", "admin")
    admin.get_by_test_id("member-count").click()
    marc = admin.get_by_test_id("member").filter(has_text="Marc Demo").get_by_test_id("presence")
    expect(marc).to_have_attribute("data-status", "offline")

    demo = login("demo", "demo")
    expect(marc).to_have_attribute("data-status", "online", timeout=LIVE_MS)
    demo.get_by_test_id("logout").click()
    expect(demo.get_by_test_id("login-screen")).to_be_visible()
    expect(marc).to_have_attribute("data-status", "offline", timeout=LIVE_MS)
