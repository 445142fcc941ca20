"""The post path: one transaction writes the message and its bus rows, NOTIFY
follows COMMIT, and the pollers who should hear it do."""
import re
import select
import threading
import time

import psycopg2
import pytest

from mail import channels, messages
from tests.mail.support import bus_notifications, call, channel_id, error_name, ok, partner_id, poll_as, query, refused
from tests.support import INVALID_PARAMS

DATE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def post(url, session, thread_id, body, **post_data):
    return call(url, "/mail/message/post",
                {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body, **post_data}},
                session)


def test_post_returns_the_formatted_message_and_stores_it(url, admin, database_url):
    general = channel_id(database_url, "general")
    message = post(url, admin, general, "Hello <b>team</b>", message_type="comment",
                   subtype_xmlid="mail.mt_comment")["result"]
    admin_partner = partner_id(database_url, "admin")
    assert message["body"] == "Hello <b>team</b>"
    assert DATE.match(message["date"])
    assert message["author_id"] == [admin_partner, "Mitchell Admin"]
    assert message["model"] == "mail.channel" and message["res_id"] == general
    assert message["record_name"] == "general"
    assert message["message_type"] == "comment"
    assert message["subtype_id"][1] == "Discussions"
    assert message["parent_id"] is False
    stored = query(database_url, "SELECT body, author_id, model, res_id FROM mail_message WHERE id = %s",
                   (message["id"],))
    assert stored == [("Hello <b>team</b>", admin_partner, "mail.channel", general)]


def test_reply_and_recipients_are_formatted(url, admin, database_url):
    general = channel_id(database_url, "general")
    first = post(url, admin, general, "What about lunch?")["result"]
    demo_partner = partner_id(database_url, "demo")
    reply = post(url, admin, general, "Marc?", parent_id=first["id"], partner_ids=[demo_partner])["result"]
    assert reply["parent_id"] == [first["id"], "Mitchell Admin: What about lunch?"]
    assert reply["partner_ids"] == [demo_partner]
    assert reply["recipients"] == [{"id": demo_partner, "name": "Marc Demo"}]


def test_a_parent_that_is_not_a_message_of_the_channel_is_dropped(url, admin, database_url):
    """As Odoo's ``test_channel_message_post_should_not_allow_adding_wrong_parent``:
    the post is accepted, without the parent, whether the parent is on
    another channel or does not exist."""
    general = channel_id(database_url, "general")
    elsewhere = post(url, admin, ok(url, "/mail/channel/create", {"name": "elsewhere"}, admin)["id"], "Body1")
    for parent_id in (elsewhere["result"]["id"], elsewhere["result"]["id"] + 100):
        reply = post(url, admin, general, "Body2", parent_id=parent_id)["result"]
        assert reply["parent_id"] is False and reply["body"] == "Body2"
        stored = query(database_url, "SELECT parent_id, res_id FROM mail_message WHERE id = %s", (reply["id"],))
        assert stored == [(None, general)]


def test_unknown_post_data_keys_are_ignored(url, admin, database_url):
    general = channel_id(database_url, "general")
    demo_partner = partner_id(database_url, "demo")
    message = post(url, admin, general, "who wrote this?", author_id=demo_partner, model="res.partner",
                   date="2000-01-01 00:00:00")["result"]
    assert message["author_id"][0] == partner_id(database_url, "admin")
    assert message["model"] == "mail.channel"
    assert message["date"] != "2000-01-01 00:00:00"


@pytest.mark.parametrize("params", [
    {"thread_model": "mail.channel", "thread_id": "1", "post_data": {"body": "x"}},
    {"thread_model": "mail.channel", "thread_id": True, "post_data": {"body": "x"}},
    {"thread_model": "res.partner", "thread_id": 1, "post_data": {"body": "x"}},
    {"thread_model": "mail.channel", "thread_id": 1},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": "x"},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": 12}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "partner_ids": ["2"]}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "partner_ids": 2}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "partner_ids": [99999]}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "attachment_ids": [1]}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "parent_id": "1"}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "message_type": "notification"}},
    {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "x", "subtype_xmlid": "mail.mt_bogus"}},
])
def test_bad_post_parameters_are_refused_and_write_nothing(url, admin, database_url, params):
    assert channel_id(database_url, "general") == 1
    before = query(database_url, "SELECT (SELECT count(*) FROM mail_message), (SELECT count(*) FROM bus_bus)")
    body = call(url, "/mail/message/post", params, admin)
    refused(body, INVALID_PARAMS)
    after = query(database_url, "SELECT (SELECT count(*) FROM mail_message), (SELECT count(*) FROM bus_bus)")
    assert before == after


def test_public_channel_post_notifies_record_and_uuid_channels(url, admin, database_url):
    general = channel_id(database_url, "general")
    uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    message = post(url, admin, general, "to everyone")["result"]
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert sorted((tuple(n["channel"]), n["type"]) for n in new) == sorted([
        (("mail.channel", general), "mail.channel/new_message"),
        ((uuid,), "mail.channel/new_message"),
    ])
    assert all(n["payload"] == {"id": general, "message": message} for n in new)


def test_private_channel_post_is_not_sent_on_its_uuid(url, admin, database_url):
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    post(url, admin, secret["id"], "hush")
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert [(tuple(n["channel"]), n["type"]) for n in new] == [(("mail.channel", secret["id"]), "mail.channel/new_message")]


def test_chat_post_moves_last_interest_for_each_member(url, admin, database_url):
    demo_partner = partner_id(database_url, "demo")
    admin_partner = partner_id(database_url, "admin")
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [demo_partner]}, admin)
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    message = post(url, admin, chat["id"], "psst")["result"]
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    interest = [n for n in new if n["type"] == "mail.channel/last_interest_dt_changed"]
    assert sorted(tuple(n["channel"]) for n in interest) == [("res.partner", admin_partner), ("res.partner", demo_partner)]
    assert all(n["payload"] == {"id": chat["id"], "last_interest_dt": message["date"]} for n in interest)
    assert [tuple(n["channel"]) for n in new if n["type"] == "mail.channel/new_message"] == [("mail.channel", chat["id"])]
    stored = query(database_url, "SELECT DISTINCT to_char(last_interest_dt, 'YYYY-MM-DD HH24:MI:SS')"
                   " FROM mail_channel_partner WHERE channel_id = %s", (chat["id"],))
    assert stored == [(message["date"],)]


def test_a_parked_poller_receives_the_new_message(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    start = poll_as(url, demo)  # the backlog (welcome message, presence)
    last = max(n["id"] for n in start)
    received = {}

    def wait():
        began = time.monotonic()
        received["notes"] = poll_as(url, demo, last)
        received["after"] = time.monotonic() - began

    poller = threading.Thread(target=wait)
    poller.start()
    time.sleep(0.3)
    message = post(url, admin, general, "are you there?")["result"]
    poller.join(10)
    assert received["after"] < 3, "the poll was not woken by the post"
    assert [(n["message"]["type"], n["message"]["payload"]) for n in received["notes"]] == [
        ("mail.channel/new_message", {"id": general, "message": message})]


class Listener:
    """A real LISTEN on the bus's NOTIFY channel."""

    def __init__(self, database_url):
        self.conn = psycopg2.connect(database_url)
        self.conn.autocommit = True
        self.conn.cursor().execute("LISTEN imbus")

    def heard(self, wait: float) -> list[str]:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            select.select([self.conn], [], [], 0.05)
            self.conn.poll()
        payloads = [n.payload for n in self.conn.notifies]
        self.conn.notifies.clear()
        return payloads

    def close(self):
        self.conn.close()


@pytest.mark.parametrize("failure", ["in the handler", "after the bus rows, in the commit's round trip"])
def test_a_failure_after_the_insert_rolls_back_message_and_bus_rows(mail_app, database_url, failure):
    admin_partner = partner_id(database_url, "admin")
    general = channel_id(database_url, "general")
    counts = "SELECT (SELECT count(*) FROM mail_message), (SELECT count(*) FROM bus_bus)"
    drawn = "SELECT last_value FROM bus_bus_id_seq"
    before, drawn_before = query(database_url, counts), query(database_url, drawn)
    listener = Listener(database_url)
    try:
        with pytest.raises((RuntimeError, psycopg2.errors.RaiseException)):
            with mail_app.database.transaction() as tx:
                channel = channels.member_channel(tx, general, admin_partner)
                messages.message_post(tx, channel, admin_partner, "never seen")
                # The message row exists inside the transaction...
                assert tx.execute("SELECT count(*) FROM mail_message WHERE body = 'never seen'").fetchone()[0] == 1

                def fail():
                    # ...and the bus rows are inserted just before this,
                    # in the same round trip as the COMMIT that never comes.
                    tx.execute_at_commit("DO $$BEGIN RAISE EXCEPTION 'boom'; END$$")

                if failure == "in the handler":
                    raise RuntimeError("boom")
                tx.on_precommit(fail)
        assert query(database_url, counts) == before
        if failure != "in the handler":
            assert query(database_url, drawn) > drawn_before, "the bus rows were never inserted"
        assert listener.heard(0.5) == []
        # The same post without the failure is heard: the listener works.
        with mail_app.database.transaction() as tx:
            channel = channels.member_channel(tx, general, admin_partner)
            messages.message_post(tx, channel, admin_partner, "seen")
        assert listener.heard(0.5) != []
    finally:
        listener.close()


def test_history_is_newest_first_and_pages(url, admin, database_url):
    general = channel_id(database_url, "general")
    posted = [post(url, admin, general, f"message {i}")["result"]["id"] for i in range(5)]
    page = ok(url, "/mail/channel/messages", {"channel_id": general, "limit": 2}, admin)
    assert [m["id"] for m in page] == posted[:-3:-1]
    older = ok(url, "/mail/channel/messages", {"channel_id": general, "max_id": page[-1]["id"], "limit": 2}, admin)
    assert [m["id"] for m in older] == [posted[2], posted[1]]
    newer = ok(url, "/mail/channel/messages", {"channel_id": general, "min_id": posted[2]}, admin)
    assert [m["id"] for m in newer] == [posted[4], posted[3]]
    everything = ok(url, "/mail/channel/messages", {"channel_id": general, "limit": 10_000}, admin)
    assert len(everything) == 6 and everything[-1]["author_id"][1] == "Mitchell Admin"
    for bad in [{"channel_id": general, "limit": 0}, {"channel_id": general, "limit": "5"}, {"channel_id": "1"}, {}]:
        assert error_name(call(url, "/mail/channel/messages", bad, admin)) == INVALID_PARAMS


def test_history_limit_is_capped(url, admin, database_url, mail_app):
    general = channel_id(database_url, "general")
    with mail_app.database.transaction() as tx:
        channel = channels.member_channel(tx, general, partner_id(database_url, "admin"))
        for i in range(messages.MAX_FETCH + 5):
            messages.message_post(tx, channel, partner_id(database_url, "admin"), f"bulk {i}")
    assert len(ok(url, "/mail/channel/messages", {"channel_id": general, "limit": 500}, admin)) == messages.MAX_FETCH


def test_seen_moves_forward_only_and_is_announced(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    demo_partner = partner_id(database_url, "demo")
    ids = [post(url, admin, general, f"m{i}")["result"]["id"] for i in range(3)]
    info = ok(url, "/mail/init_messaging", {}, demo)["channels"][0]
    # The demo's welcome message is unread too.
    assert info["message_unread_counter"] == 4 and info["last_message_id"] == ids[-1]
    last = query(database_url, "SELECT max(id) FROM bus_bus")[0][0]
    seen = ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": ids[1]}, demo)
    assert seen == {"channel_id": general, "last_message_id": ids[1], "partner_id": demo_partner}
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert [(tuple(n["channel"]), n["type"], n["payload"]) for n in new] == [
        (("res.partner", demo_partner), "mail.channel.partner/seen", seen)]
    assert ok(url, "/mail/init_messaging", {}, demo)["channels"][0]["message_unread_counter"] == 1
    # Backwards: nothing changes, nothing is sent.
    back = ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": ids[0]}, demo)
    assert back["last_message_id"] == ids[1]
    assert query(database_url, "SELECT max(id) FROM bus_bus")[0][0] == new[-1]["id"]
    # Beyond the last message: the last message of the channel is seen.
    ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": ids[-1] + 1000}, demo)
    assert query(database_url, "SELECT seen_message_id FROM mail_channel_partner WHERE channel_id = %s"
                 " AND partner_id = %s", (general, demo_partner)) == [(ids[-1],)]


def test_own_posts_are_not_unread(url, admin, database_url):
    general = channel_id(database_url, "general")
    post(url, admin, general, "mine")
    assert ok(url, "/mail/init_messaging", {}, admin)["channels"][0]["message_unread_counter"] == 0


def test_typing_is_announced_on_the_channel(url, demo, database_url):
    general = channel_id(database_url, "general")
    demo_partner = partner_id(database_url, "demo")
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    assert ok(url, "/mail/channel/notify_typing", {"channel_id": general, "is_typing": True}, demo) is True
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert [(tuple(n["channel"]), n["type"], n["payload"]) for n in new] == [
        (("mail.channel", general), "mail.channel.partner/typing_status",
         {"channel_id": general, "is_typing": True, "partner_id": demo_partner, "partner_name": "Marc Demo"})]
    assert error_name(call(url, "/mail/channel/notify_typing", {"channel_id": general, "is_typing": 1}, demo)) \
        == INVALID_PARAMS
