"""Reading: unread counters as the server computes them, and who hears that
a member has read a conversation (Odoo 15's ``mail.channel.partner/seen``)."""
import requests

from tests.mail.support import (
    bus_notifications,
    call,
    channel_id,
    login,
    newest_bus_id,
    ok,
    partner_id,
    poll_until,
    refused,
)
from tests.mail.test_post import post
from tests.support import NOT_FOUND, SESSION_EXPIRED

SEEN = "mail.channel.partner/seen"



def unread(url, session, channel):
    infos = ok(url, "/mail/init_messaging", {}, session)["channels"]
    return next(info["message_unread_counter"] for info in infos if info["id"] == channel)


def test_counters_count_others_messages_after_the_seen_marker(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    before = unread(url, demo, general)
    ids = [post(url, admin, general, f"m{i}")["result"]["id"] for i in range(3)]
    assert unread(url, demo, general) == before + 3
    ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": ids[0]}, demo)
    assert unread(url, demo, general) == 2
    ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": ids[-1]}, demo)
    assert unread(url, demo, general) == 0
    info = ok(url, "/mail/init_messaging", {}, demo)["channels"]
    assert next(i for i in info if i["id"] == general)["seen_message_id"] == ids[-1]


def test_in_a_channel_only_the_readers_own_tabs_hear_it(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    message = post(url, admin, general, "read me")["result"]
    other_tab = login(url, "demo")
    since = newest_bus_id(database_url)
    seen = ok(url, "/mail/channel/set_last_seen_message",
              {"channel_id": general, "last_message_id": message["id"]}, demo)
    heard = poll_until(url, other_tab, lambda notes: any(n["message"]["type"] == SEEN for n in notes), since=since)
    assert [n["message"]["payload"] for n in heard if n["message"]["type"] == SEEN] == [seen]
    assert seen["partner_id"] == partner_id(database_url, "demo")
    # Another member of the channel is not told who read what: the only row goes to the reader's partner.
    rows = [n for n in bus_notifications(database_url) if n["id"] > since and n["type"] == SEEN]
    assert [tuple(n["channel"]) for n in rows] == [("res.partner", seen["partner_id"])]


def test_in_a_chat_the_other_side_hears_it(url, admin, demo, database_url):
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [partner_id(database_url, "demo")]}, admin)
    message = post(url, admin, chat["id"], "hi")["result"]
    since = newest_bus_id(database_url)
    seen = ok(url, "/mail/channel/set_last_seen_message",
              {"channel_id": chat["id"], "last_message_id": message["id"]}, demo)
    for session in (admin, login(url, "demo")):
        heard = poll_until(url, session, lambda notes: any(n["message"]["type"] == SEEN for n in notes), since=since)
        assert [n["message"]["payload"] for n in heard if n["message"]["type"] == SEEN] == [seen]


def test_strangers_and_anonymous_callers_cannot_mark_read(url, admin, database_url):
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    message = post(url, admin, secret["id"], "hush")["result"]
    params = {"channel_id": secret["id"], "last_message_id": message["id"]}
    refused(call(url, "/mail/channel/set_last_seen_message", params, login(url, "jane")), NOT_FOUND)
    refused(call(url, "/mail/channel/set_last_seen_message", params, requests.Session()), SESSION_EXPIRED)
    assert unread(url, admin, secret["id"]) == 0
