"""What the browser tests do in the chat: type and send like a person, read
the last message, and talk to the server as another client over JSON-RPC.

"Live" means within 2 s of the sender's post: the message travels through
the post route, PostgreSQL's NOTIFY, the dispatcher and the receiver's
parked long-poll before the receiving page renders it.
"""
from __future__ import annotations

import requests
from playwright.sync_api import Page, expect

from tests.support import result, rpc

LIVE_MS = 2000


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
