"""Channels, chats and membership: creating, joining, inviting, and the
notification that makes a new conversation appear in an open client."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.mail.support import (
    bus_notifications,
    call,
    channel_id,
    error_name,
    login,
    message_ids,
    ok,
    partner_id,
    poll_as,
    poll_until,
    query,
    refused,
)
from tests.support import INVALID_PARAMS, NOT_FOUND, odoo_error


def post(url, session, thread_id, body):
    return call(url, "/mail/message/post",
                {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body}}, session)


def test_init_messaging_lists_the_callers_channels(url, demo, database_url):
    data = ok(url, "/mail/init_messaging", {}, demo)
    assert data["current_partner"] == {"id": partner_id(database_url, "demo"), "name": "Marc Demo"}
    assert data["current_user_id"] == query(database_url, "SELECT id FROM res_users WHERE login = 'demo'")[0][0]
    [general] = data["channels"]
    assert general["name"] == "general" and general["channel_type"] == "channel" and general["public"] == "public"
    assert general["description"] == "General announcements for all employees."
    assert {m["name"] for m in general["members"]} == {"Mitchell Admin", "Marc Demo", "Jane Peterson", "Joel Willis"}
    assert all(set(m) == {"id", "name", "im_status"} for m in general["members"])
    for key in ("uuid", "message_unread_counter", "last_message_id", "seen_message_id"):
        assert key in general


def test_create_channel(url, admin, database_url):
    info = ok(url, "/mail/channel/create", {"name": "  sales   team ", "privacy": "private",
                                             "description": "numbers"}, admin)
    assert info["name"] == "sales team" and info["public"] == "private" and info["channel_type"] == "channel"
    assert [m["name"] for m in info["members"]] == ["Mitchell Admin"]
    assert info["id"] in [c["id"] for c in ok(url, "/mail/init_messaging", {}, admin)["channels"]]
    for bad in [{"name": ""}, {"name": "   "}, {"name": "x", "privacy": "secret"}, {"name": 5},
                {"name": "x" * 129}, {}]:
        assert error_name(call(url, "/mail/channel/create", bad, admin)) == INVALID_PARAMS, bad


def test_join_public_channel_only(url, admin, demo, database_url):
    public = ok(url, "/mail/channel/create", {"name": "open"}, admin)
    private = ok(url, "/mail/channel/create", {"name": "closed", "privacy": "private"}, admin)
    joined = ok(url, "/mail/channel/join", {"channel_id": public["id"]}, demo)
    assert joined["is_member"] and "Marc Demo" in [m["name"] for m in joined["members"]]
    again = ok(url, "/mail/channel/join", {"channel_id": public["id"]}, demo)
    assert again["member_count"] == 2
    for channel in (private["id"], 99999):
        body = call(url, "/mail/channel/join", {"channel_id": channel}, demo)
        refused(body, NOT_FOUND)
    assert query(database_url, "SELECT count(*) FROM mail_channel_partner WHERE channel_id = %s",
                 (private["id"],)) == [(1,)]


def test_search_public_flags_membership(url, admin, demo):
    mine = ok(url, "/mail/channel/create", {"name": "admins only"}, admin)
    ok(url, "/mail/channel/create", {"name": "hidden", "privacy": "private"}, admin)
    found = {c["name"]: c for c in ok(url, "/mail/channel/search_public", {}, demo)}
    assert set(found) == {"general", "admins only"}
    assert found["general"]["is_member"] is True
    assert found["admins only"]["is_member"] is False and found["admins only"]["id"] == mine["id"]
    assert found["admins only"]["message_unread_counter"] == 0


def test_add_members_announces_the_channel_to_the_newcomer(url, admin, database_url):
    team = ok(url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    post(url, admin, team["id"], "before you came")
    jane = partner_id(database_url, "jane")
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    info = ok(url, "/mail/channel/add_members", {"channel_id": team["id"], "partner_ids": [jane]}, admin)
    assert info["member_count"] == 2
    new = [n for n in bus_notifications(database_url) if n["id"] > last]
    assert [(tuple(n["channel"]), n["type"]) for n in new] == [(("res.partner", jane), "mail.channel/joined")]
    payload = new[0]["payload"]
    assert payload["id"] == team["id"] and payload["is_member"] and payload["name"] == "team"
    # Joining does not make the old history unread.
    assert payload["message_unread_counter"] == 0
    # Adding again changes and announces nothing.
    ok(url, "/mail/channel/add_members", {"channel_id": team["id"], "partner_ids": [jane]}, admin)
    assert query(database_url, "SELECT max(id) FROM bus_bus")[0][0] == new[-1]["id"]
    body = call(url, "/mail/channel/add_members", {"channel_id": team["id"], "partner_ids": [99999]}, admin)
    assert error_name(body) == INVALID_PARAMS
    body = call(url, "/mail/channel/add_members", {"channel_id": team["id"], "partner_ids": [True]}, admin)
    assert error_name(body) == INVALID_PARAMS


def test_a_parked_client_learns_about_a_new_channel_and_then_hears_it(url, admin, database_url):
    jane = login(url, "jane")
    last = max(n["id"] for n in poll_as(url, jane))
    team = ok(url, "/mail/channel/create", {"name": "team"}, admin)
    received = {}
    poller = threading.Thread(target=lambda: received.setdefault("notes", poll_as(url, jane, last)))
    poller.start()
    time.sleep(0.3)
    ok(url, "/mail/channel/add_members", {"channel_id": team["id"], "partner_ids": [partner_id(database_url, "jane")]},
       admin)
    poller.join(10)
    [joined] = received["notes"]
    assert joined["message"]["type"] == "mail.channel/joined" and joined["message"]["payload"]["id"] == team["id"]
    message = post(url, admin, team["id"], "welcome jane")["result"]
    notes = poll_until(url, jane, lambda notes: message["id"] in message_ids(notes))
    assert [n["message"]["payload"]["message"] for n in notes
            if n["message"]["payload"].get("id") == team["id"] and n["message"]["type"] == "mail.channel/new_message"
            ] == [message]


def test_chat_is_found_or_created(url, admin, demo, database_url):
    demo_partner = partner_id(database_url, "demo")
    admin_partner = partner_id(database_url, "admin")
    last = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [demo_partner]}, admin)
    assert chat["channel_type"] == "chat" and chat["public"] == "private"
    assert sorted(m["id"] for m in chat["members"]) == sorted([admin_partner, demo_partner])
    joined = [n for n in bus_notifications(database_url) if n["id"] > last and n["type"] == "mail.channel/joined"]
    assert sorted(tuple(n["channel"]) for n in joined) == sorted([("res.partner", admin_partner),
                                                                  ("res.partner", demo_partner)])
    # The other side (and the same side again) gets the same conversation.
    assert ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [admin_partner]}, demo)["id"] == chat["id"]
    assert ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [demo_partner, admin_partner]},
              admin)["id"] == chat["id"]
    assert query(database_url, "SELECT count(*) FROM mail_channel WHERE channel_type = 'chat'") == [(1,)]
    for bad in [{"partner_ids": [99999]}, {"partner_ids": ["2"]}, {"partner_ids": [demo_partner, 3]}, {}]:
        assert error_name(call(url, "/mail/channel/get_or_create_chat", bad, admin)) == INVALID_PARAMS, bad
    body = call(url, "/mail/channel/add_members", {"channel_id": chat["id"], "partner_ids": [3]}, admin)
    assert error_name(body) == INVALID_PARAMS


def test_chat_is_never_duplicated_under_concurrency(url, database_url):
    admin, demo = login(url, "admin"), login(url, "demo")
    admin_partner, demo_partner = partner_id(database_url, "admin"), partner_id(database_url, "demo")
    calls = [(admin, demo_partner), (demo, admin_partner)] * 6
    barrier = threading.Barrier(len(calls))

    def start(args):
        session, other = args
        barrier.wait()
        return ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [other]}, session)["id"]

    with ThreadPoolExecutor(len(calls)) as pool:
        ids = list(pool.map(start, calls))
    assert len(set(ids)) == 1
    assert query(database_url, "SELECT count(*) FROM mail_channel WHERE channel_type = 'chat'") == [(1,)]
    assert query(database_url, "SELECT count(*) FROM mail_channel_partner WHERE channel_id = %s", (ids[0],)) == [(2,)]


def test_partner_search(url, admin):
    names = [p["name"] for p in ok(url, "/mail/partner/search", {"term": "de"}, admin)]
    assert names == ["Deco Addict", "Marc Demo"]
    assert ok(url, "/mail/partner/search", {"term": "%"}, admin) == []
    assert ok(url, "/mail/partner/search", {"term": "_"}, admin) == []
    assert len(ok(url, "/mail/partner/search", {"term": "", "limit": 3}, admin)) == 3
    assert all(set(p) == {"id", "name", "im_status"} for p in ok(url, "/mail/partner/search", {"term": "a"}, admin))
    assert error_name(call(url, "/mail/partner/search", {"term": 3}, admin)) == INVALID_PARAMS


@pytest.mark.parametrize("route", ["/mail/channel/create", "/mail/channel/search_public", "/mail/partner/search",
                                   "/mail/channel/get_or_create_chat", "/mail/init_messaging"])
def test_garbage_envelopes_get_jsonrpc_errors(url, admin, route):
    answer = requests.post(url + route, data="{not json", headers={"Content-Type": "application/json"},
                           cookies=admin.cookies)
    assert answer.status_code == 400 and answer.json()["error"]["data"]["name"] == "parse_error"
    answer = requests.post(url + route, json={"jsonrpc": "2.0", "params": [1, 2]}, cookies=admin.cookies)
    odoo_error(answer.status_code, answer.json(), INVALID_PARAMS)
    assert ok(url, "/web/session/get_session_info", {}, admin)["username"] == "admin"


@pytest.mark.parametrize("huge", [2**31, 2**63, 2**70])
def test_huge_ids_are_just_unknown(url, admin, database_url, huge):
    general = channel_id(database_url, "general")
    refused(call(url, "/mail/channel/messages", {"channel_id": huge}, admin), NOT_FOUND)
    refused(call(url, "/mail/channel/join", {"channel_id": huge}, admin), NOT_FOUND)
    assert error_name(call(url, "/mail/channel/add_members", {"channel_id": general, "partner_ids": [huge]},
                           admin)) == INVALID_PARAMS
    assert error_name(call(url, "/mail/channel/get_or_create_chat", {"partner_ids": [huge]}, admin)) \
        == INVALID_PARAMS
    assert ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general,
                                          "post_data": {"body": "x", "parent_id": huge}}, admin)["parent_id"] is False
    assert error_name(call(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general,
                                                        "post_data": {"body": "x", "partner_ids": [huge]}}, admin)) \
        == INVALID_PARAMS
    assert ok(url, "/mail/channel/messages", {"channel_id": general, "max_id": huge}, admin)
    assert ok(url, "/mail/channel/set_last_seen_message", {"channel_id": general, "last_message_id": huge}, admin)
    assert ok(url, "/longpolling/im_status", {"partner_ids": [huge]}, admin) == []


def test_a_poll_stops_at_joined_so_the_new_channels_first_message_is_not_lost(mail_app, url, demo, database_url):
    """Added to a chat while its poll was parked, a client heard the
    "joined" notice and the later rows on its partner channel, but not the
    message in between (on the new chat, which that poll did not listen to);
    following ``last`` it then skipped it for good."""
    from datetime import datetime

    from mail import channels as chat_channels
    from mail import messages
    from tests.support import ParkedPoll, wait_for

    admin_pid, demo_pid = partner_id(database_url, "admin"), partner_id(database_url, "demo")
    poll_as(url, demo, 0, peek=True)  # demo comes online: that notice is out of the way
    start = query(database_url, "SELECT coalesce(max(id), 0) FROM bus_bus")[0][0]
    parked = ParkedPoll(url, [], start, session=demo)
    wait_for(lambda: mail_app.dispatcher.waiter_count >= 1, 5, "the demo poll parking")
    with mail_app.database.transaction() as tx:
        info = chat_channels.get_or_create_chat(tx, admin_pid, demo_pid, datetime.utcnow())
        channel = chat_channels.member_channel(tx, info["id"], admin_pid)
        first = messages.message_post(tx, channel, admin_pid, "first words")
    heard = parked.result(5)
    assert heard[-1]["message"]["type"] == "mail.channel/joined"
    following = poll_as(url, demo, heard[-1]["id"])
    assert first["id"] in message_ids(following)
