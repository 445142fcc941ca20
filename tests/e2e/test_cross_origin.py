"""A page of another site long-polls the chat's bus in Chromium, the way
Odoo's livechat widget does from a customer's website: ``fetch`` with a JSON
body (so the browser preflights every new poll), listening on the public
uuid of #general, and it shows a message posted in #general meanwhile.

The second site is another port of 127.0.0.1: another origin, so the browser
applies CORS and lets the page read an answer only if the bus allows it.
"""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import VIEWPORT
from tests.e2e.test_browser import api_session, general_id, post
from tests.support import result, rpc, wait_for

pytestmark = pytest.mark.browser

#: Generous: the message is pushed to a parked poll, so it normally shows in
#: milliseconds, but the machine may be busy.
ARRIVAL_MS = 5000

WIDGET_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A shop with a chat widget</title></head>
<body>
<ul id="received"></ul>
<script>
const BUS = %(bus)s;
const CHANNEL = %(channel)s;
window.received = [];
window.failures = [];

async function follow() {
  let last = 0;
  for (;;) {
    try {
      const answer = await fetch(BUS + "/longpolling/poll", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({jsonrpc: "2.0", method: "call", id: last,
                              params: {channels: [CHANNEL], last: last, options: {}}}),
      });
      const {result} = await answer.json();
      for (const notification of result) {
        last = Math.max(last, notification.id);
        window.received.push(notification.message);
        const message = notification.message.payload.message || {};
        const item = document.createElement("li");
        item.textContent = notification.message.type + ": " + (message.body || "");
        document.getElementById("received").append(item);
      }
    } catch (error) {
      window.failures.push(String(error));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}
follow();
</script>
</body></html>
"""


def static_site(html: str):
    """A one-page site: the WSGI app the second origin serves."""
    body = html.encode()

    def site(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]
    return site


def test_a_page_of_another_origin_long_polls_a_public_channel(browser, chat_app, chat_url, serve):
    admin = api_session(chat_url, "admin")
    channels = result(rpc(chat_url, "/mail/init_messaging", {}, session=admin))["channels"]
    general = next(channel for channel in channels if channel["name"] == "general")
    site = serve(static_site(WIDGET_PAGE % {"bus": json.dumps(chat_url), "channel": json.dumps(general["uuid"])}))
    assert site.url != chat_url

    context = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(site.url + "/")
        # The first poll (last=0) brings the welcome message at once; the
        # next one parks on the server, waiting for news.
        received = page.locator("#received li")
        expect(received.first).to_contain_text("mail.channel/new_message", timeout=ARRIVAL_MS)
        wait_for(lambda: chat_app.dispatcher.waiter_count >= 1, 10, "the page's next poll parking")

        text = "A visitor on another site reads this live"
        posted = post(chat_url, admin, general_id(chat_url, admin), text)
        expect(received.last).to_contain_text(text, timeout=ARRIVAL_MS)
        heard = page.evaluate("window.received.map((m) => m.payload.message && m.payload.message.id)")
        assert heard.count(posted["id"]) == 1
        assert page.evaluate("window.failures") == []
    finally:
        context.close()
    assert not errors, errors
