"""Two people in the browser: what one does to messages (format, mention,
react, reply, edit, delete), the other's page shows live."""
import pytest
from playwright.sync_api import expect

from tests.e2e.chat import send

pytestmark = pytest.mark.browser

#: How long the other page may take to show it; generous for a busy machine.
SHOWN_MS = 10000


def message(page, text):
    """The message whose own body (not a quote of it) holds ``text``."""
    body = page.get_by_test_id("message-body").filter(has_text=text)
    return page.get_by_test_id("messages").get_by_test_id("message").filter(has=body)


def act(page, text, action):
    row = message(page, text)
    row.hover()
    row.get_by_test_id(action).click()


def test_edit_delete_reply_react_and_mention_show_live(login, artifacts):
    alice = login("admin", "admin")
    bob = login("demo", "demo")
    alice.on("dialog", lambda dialog: dialog.accept())

    send(alice, "hello **world** see https://example.com")
    shown = message(bob, "hello world")
    expect(shown.locator("strong")).to_have_text("world", timeout=SHOWN_MS)
    link = shown.locator('a[href="https://example.com"]')
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    composer = alice.get_by_test_id("composer-input")
    composer.press_sequentially("@Mar")
    alice.get_by_test_id("mention-suggestion").filter(has_text="Marc Demo").click()
    composer.press_sequentially("lunch?")
    composer.press("Enter")
    expect(composer).to_have_value("")
    mention = message(bob, "lunch?").locator("a.o_mail_redirect")
    expect(mention).to_have_text("@Marc Demo", timeout=SHOWN_MS)
    expect(mention).to_have_class("o_mail_redirect mention mention-me")
    expect(message(alice, "lunch?").locator("a.mention-me")).to_have_count(0)

    act(bob, "lunch?", "react")
    message(bob, "lunch?").get_by_test_id("emoji").filter(has_text="👍").click()
    pill = message(alice, "lunch?").get_by_test_id("reaction")
    expect(pill).to_have_text("👍1", timeout=SHOWN_MS)
    pill.click()
    expect(pill).to_have_text("👍2")
    expect(message(bob, "lunch?").get_by_test_id("reaction")).to_have_text("👍2", timeout=SHOWN_MS)

    act(bob, "hello world", "reply")
    expect(bob.get_by_test_id("replying-to")).to_contain_text("Replying to Mitchell Admin")
    send(bob, "hi back")
    expect(bob.get_by_test_id("replying-to")).to_be_hidden()
    quote = message(alice, "hi back").get_by_test_id("reply-quote")
    expect(quote).to_contain_text("Mitchell Admin: hello world", timeout=SHOWN_MS)
    quote.click()
    expect(message(alice, "hello world")).to_be_in_viewport()

    act(alice, "hello world", "edit")
    editor = alice.get_by_test_id("edit-input")
    editor.fill("hello *everyone*")
    editor.press("Enter")
    expect(message(bob, "hello everyone").locator("em")).to_have_text("everyone", timeout=SHOWN_MS)
    alice.screenshot(path=str(artifacts / "message-actions.png"))

    act(alice, "lunch?", "delete")
    expect(message(bob, "lunch?")).to_have_count(0, timeout=SHOWN_MS)
    expect(message(alice, "lunch?")).to_have_count(0)
