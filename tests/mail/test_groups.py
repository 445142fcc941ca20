"""Groups: a private conversation of several people, created in one call,
announced to every member, and closed to everyone else."""
import psycopg2
import pytest

from tests.mail.support import (
    bus_notifications,
    call,
    login,
    message_ids,
    ok,
    partner_id,
    poll_as,
    poll_until,
    query,
    refused,
)
from tests.support import INVALID_PARAMS, NOT_FOUND


def post(url, session, thread_id, body):
    return call(url, "/mail/message/post",
                {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body}}, session)


@pytest.fixture
def people(database_url):
    return {login_name: partner_id(database_url, login_name) for login_name in ("admin", "demo", "jane", "joel")}


def test_create_group_names_it_after_its_members_and_tells_each_of_them(url, admin, people, database_url):
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    # The caller is always a member, even when not listed; duplicates count once.
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["jane"], people["demo"], people["jane"]]},
               admin)
    assert group["channel_type"] == "group" and group["public"] == "private" and group["is_member"]
    assert group["name"] == "Jane Peterson, Marc Demo, Mitchell Admin"
    assert sorted(m["id"] for m in group["members"]) == sorted([people["admin"], people["demo"], people["jane"]])
    assert {p["partner_id"] for p in group["seen_partners_info"]} == {people["admin"], people["demo"], people["jane"]}
    joined = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert sorted((tuple(n["channel"]), n["type"]) for n in joined) == sorted(
        (("res.partner", people[who]), "mail.channel/joined") for who in ("admin", "demo", "jane"))
    jane_payload = next(n["payload"] for n in joined if n["channel"] == ["res.partner", people["jane"]])
    assert jane_payload["id"] == group["id"] and jane_payload["is_member"]
    assert group["id"] in [c["id"] for c in ok(url, "/mail/init_messaging", {}, login(url, "jane"))["channels"]]
    # Unlike a chat, the same people may start another group.
    again = ok(url, "/mail/channel/create_group", {"partner_ids": [people["demo"], people["jane"]]}, admin)
    assert again["id"] != group["id"]


def test_a_member_listening_hears_the_new_group_and_its_messages(url, admin, people):
    demo = login(url, "demo")
    last = max(n["id"] for n in poll_as(url, demo))
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["demo"]]}, admin)
    [joined] = poll_as(url, demo, last)
    assert joined["message"]["type"] == "mail.channel/joined" and joined["message"]["payload"]["id"] == group["id"]
    message = post(url, admin, group["id"], "hello group")["result"]
    notes = poll_until(url, demo, lambda notes: message["id"] in message_ids(notes), channels=[])
    assert message["id"] in message_ids(notes)


def test_posting_in_a_group_moves_it_up_for_every_member(url, admin, people, database_url):
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["demo"], people["jane"]]}, admin)
    last = query(database_url, "SELECT max(id) FROM bus_bus")[0][0]
    message = post(url, login(url, "jane"), group["id"], "news")["result"]
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    interest = [n for n in new if n["type"] == "mail.channel/last_interest_dt_changed"]
    assert sorted(tuple(n["channel"]) for n in interest) == sorted(
        ("res.partner", people[who]) for who in ("admin", "demo", "jane"))
    assert all(n["payload"] == {"id": group["id"], "last_interest_dt": message["date"]} for n in interest)
    assert [(tuple(n["channel"]), n["payload"]["message"]["id"]) for n in new
            if n["type"] == "mail.channel/new_message"] == [(("mail.channel", group["id"]), message["id"])]


def test_strangers_cannot_see_or_use_a_group(url, admin, people, database_url):
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["demo"]]}, admin)
    message = post(url, admin, group["id"], "between us")["result"]
    joel = login(url, "joel")
    before = query(database_url, "SELECT count(*) FROM mail_message")
    for path, params in [
        ("/mail/message/post", {"thread_model": "mail.channel", "thread_id": group["id"], "post_data": {"body": "hi"}}),
        ("/mail/channel/messages", {"channel_id": group["id"]}),
        ("/mail/channel/set_last_seen_message", {"channel_id": group["id"], "last_message_id": message["id"]}),
        ("/mail/channel/notify_typing", {"channel_id": group["id"], "is_typing": True}),
        ("/mail/channel/add_members", {"channel_id": group["id"], "partner_ids": [people["joel"]]}),
        ("/mail/channel/join", {"channel_id": group["id"]}),
    ]:
        body = call(url, path, params, joel)
        refused(body, NOT_FOUND)
    assert query(database_url, "SELECT count(*) FROM mail_message") == before
    # Naming the group's uuid in a poll gives a stranger nothing either.
    assert message["id"] not in message_ids(poll_as(url, joel, 0, channels=[group["uuid"]]))
    assert group["id"] not in [c["id"] for c in ok(url, "/mail/init_messaging", {}, joel)["channels"]]
    # A member may invite, and then the newcomer is in.
    ok(url, "/mail/channel/add_members", {"channel_id": group["id"], "partner_ids": [people["joel"]]}, admin)
    assert [m["id"] for m in ok(url, "/mail/channel/messages", {"channel_id": group["id"]}, joel)] == [message["id"]]


def test_create_group_refuses_bad_partner_lists(url, admin, people, database_url):
    before = query(database_url, "SELECT count(*) FROM mail_channel")
    for bad in [{}, {"partner_ids": []}, {"partner_ids": [people["admin"]]}, {"partner_ids": [99999]},
                {"partner_ids": [people["demo"], 99999]}, {"partner_ids": ["2"]}, {"partner_ids": [True]},
                {"partner_ids": people["demo"]}]:
        body = call(url, "/mail/channel/create_group", bad, admin)
        refused(body, INVALID_PARAMS)
    assert call(url, "/mail/channel/create_group", {"partner_ids": [people["demo"]]})["error"]["code"] == 100
    assert query(database_url, "SELECT count(*) FROM mail_channel") == before


def test_a_long_member_list_gives_a_shortened_name(url, admin, database_url):
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cr:
            cr.execute("INSERT INTO res_partner (name) SELECT repeat(chr(64 + n), 60) FROM generate_series(1, 3) n"
                       " RETURNING id")
            long_named = [row[0] for row in cr.fetchall()]
    finally:
        conn.close()
    group = ok(url, "/mail/channel/create_group", {"partner_ids": long_named}, admin)
    assert group["member_count"] == 4
    assert group["name"] == ("A" * 60 + ", " + "B" * 60 + ", " + "C" * 5)[:127] + "…"
    assert len(group["name"]) == 128
