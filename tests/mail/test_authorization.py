"""Who may do what: every route for a member, a non-member, an anonymous
caller and a caller with a forged cookie, and that a refusal writes nothing.
Also what a poll may hear."""
import json
import os
import uuid

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer

from bus.config import DEFAULT_MAX_CHANNEL_NAME
from mail.app import create_app
from mail.demo_data import install_demo_data
from tests.mail.support import (
    TEST_SECRET,
    call,
    channel_id,
    login,
    message_ids,
    ok,
    partner_id,
    poll_as,
    poll_until,
    query,
    refused,
    snapshot,
)
from tests.support import INVALID_PARAMS, NOT_FOUND, SESSION_EXPIRED, HttpServer, create_database, drop_database

MODE = os.environ.get("IMBUS_TEST_MODE", "threaded")


@pytest.fixture(scope="module")
def world(server_url):
    """One chat shared by the whole matrix (refusals write nothing, so the
    cases cannot disturb each other): admin owns the private channel
    "secret", demo is not in it."""
    name = f"imbus_test_{uuid.uuid4().hex[:12]}"
    database_url = create_database(server_url, name)
    app = create_app(database_url, timeout=5, secret_key=TEST_SECRET)
    server = None
    try:
        install_demo_data(app.database)
        server = HttpServer(app, MODE)
        url = server.url
        admin = login(url, "admin")
        secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
        message = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": secret["id"],
                                                 "post_data": {"body": "classified"}}, admin)
        forged = requests.Session()
        admin_uid = query(database_url, "SELECT id FROM res_users WHERE login = 'admin'")[0][0]
        forged.cookies.set("session_id", URLSafeTimedSerializer("not-the-secret", salt="imbus.session")
                           .dumps({"uid": admin_uid, "sv": 0}))
        # A real cookie of a user who has logged out since.
        joel = login(url, "joel")
        logged_out = requests.Session()
        logged_out.cookies.set("session_id", joel.cookies["session_id"])
        ok(url, "/web/session/destroy", {}, joel)
        yield {
            "url": url,
            "database_url": database_url,
            "secret": secret["id"],
            "message": message["id"],
            "jane": partner_id(database_url, "jane"),
            "callers": {"member": admin, "non_member": login(url, "demo"), "anonymous": requests.Session(),
                        "bad_cookie": forged, "logged_out": logged_out},
        }
    finally:
        if server is not None:
            server.stop()
        app.close()
        drop_database(server_url, name)


def _channel_routes(w):
    return {
        "post": ("/mail/message/post", {"thread_model": "mail.channel", "thread_id": w["secret"],
                                        "post_data": {"body": "hello"}}),
        "history": ("/mail/channel/messages", {"channel_id": w["secret"]}),
        "seen": ("/mail/channel/set_last_seen_message", {"channel_id": w["secret"], "last_message_id": w["message"]}),
        "typing": ("/mail/channel/notify_typing", {"channel_id": w["secret"], "is_typing": True}),
        "add_members": ("/mail/channel/add_members", {"channel_id": w["secret"], "partner_ids": [w["jane"]]}),
    }


def _open_routes(w):
    return {
        "init_messaging": ("/mail/init_messaging", {}),
        "search_public": ("/mail/channel/search_public", {}),
        "create": ("/mail/channel/create", {"name": "fresh"}),
        "chat": ("/mail/channel/get_or_create_chat", {"partner_ids": [w["jane"]]}),
        "group": ("/mail/channel/create_group", {"partner_ids": [w["jane"]]}),
        "partner_search": ("/mail/partner/search", {"term": "a"}),
        "im_status": ("/longpolling/im_status", {"partner_ids": [w["jane"]]}),
    }


CALLERS = ["member", "non_member", "anonymous", "bad_cookie", "logged_out"]
CHANNEL_ROUTES = ["post", "history", "seen", "typing", "add_members"]
OPEN_ROUTES = ["init_messaging", "search_public", "create", "chat", "group", "partner_search", "im_status"]


def _expect(route_kind, caller):
    if caller in ("anonymous", "bad_cookie", "logged_out"):
        return SESSION_EXPIRED
    if route_kind == "channel" and caller == "non_member":
        return NOT_FOUND
    return None


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", CHANNEL_ROUTES + OPEN_ROUTES)
def test_route_access(world, route, caller):
    kind = "channel" if route in CHANNEL_ROUTES else "open"
    path, params = {**_channel_routes(world), **_open_routes(world)}[route]
    before = snapshot(world["database_url"])
    body = call(world["url"], path, params, world["callers"][caller])
    expected = _expect(kind, caller)
    if expected is None:
        assert body["status"] == 200 and "result" in body, body
        return
    refused(body, expected)
    assert snapshot(world["database_url"]) == before, "a refused call wrote something"


@pytest.mark.parametrize("route", CHANNEL_ROUTES + OPEN_ROUTES + ["join"])
def test_anonymous_callers_are_told_to_log_in_before_parameters_are_checked(world, route):
    path = {**_channel_routes(world), **_open_routes(world), "join": ("/mail/channel/join", {})}[route][0]
    body = call(world["url"], path, {"channel_id": "not a number", "partner_ids": "nope"})
    refused(body, SESSION_EXPIRED)


@pytest.mark.parametrize("caller", CALLERS)
def test_private_channels_cannot_be_joined(world, caller):
    before = snapshot(world["database_url"])
    body = call(world["url"], "/mail/channel/join", {"channel_id": world["secret"]}, world["callers"][caller])
    refused(body, SESSION_EXPIRED if caller in ("anonymous", "bad_cookie", "logged_out") else NOT_FOUND)
    assert snapshot(world["database_url"]) == before


def test_unknown_channels_look_like_forbidden_ones(world):
    member = world["callers"]["member"]
    body = call(world["url"], "/mail/channel/messages", {"channel_id": 424242}, member)
    forbidden = call(world["url"], "/mail/channel/messages", {"channel_id": world["secret"]},
                     world["callers"]["non_member"])
    unknown = json.dumps(refused(body, NOT_FOUND)).replace("424242", "N")
    assert unknown == json.dumps(refused(forbidden, NOT_FOUND)).replace(str(world["secret"]), "N")


# -- what a poll hears ----------------------------------------------------------


@pytest.fixture
def short_polls(make_mail_app, serve):
    """A chat whose polls give up after 1 s, to prove that nothing comes."""
    return serve(make_mail_app(timeout=1)).url


def _types_and_channel_ids(notes):
    return {(n["message"]["type"], n["message"]["payload"].get("id")) for n in notes}


def test_polls_hear_only_what_the_caller_may(short_polls, database_url):
    url = short_polls
    admin, demo = login(url, "admin"), login(url, "demo")
    general = channel_id(database_url, "general")
    general_uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    classified = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": secret["id"],
                                                "post_data": {"body": "classified"}}, admin)
    ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [partner_id(database_url, "jane")]}, admin)
    news = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general,
                                          "post_data": {"body": "public news"}}, admin)
    # Once admin has heard the last post, this process's dispatcher has read every row.
    heard_by_admin = poll_until(url, admin, lambda notes: news["id"] in message_ids(notes))
    assert classified["id"] in message_ids(heard_by_admin)
    assert any(n["message"]["type"] == "mail.channel/joined" for n in heard_by_admin)

    admin_partner = partner_id(database_url, "admin")
    greedy = [secret["uuid"], general_uuid, "res.partner", f'["{admin_partner}"]', "mail.channel", "broadcast"]
    anonymous = poll_as(url, None, 0, greedy)
    assert all(n["message"]["type"] == "mail.channel/new_message" for n in anonymous)
    assert {n["message"]["payload"]["id"] for n in anonymous} == {general}
    assert news["id"] in message_ids(anonymous)

    heard_by_demo = poll_as(url, demo, 0, greedy)
    # A member naming its channel's uuid as well still hears each message once.
    assert list(message_ids(heard_by_demo)).count(news["id"]) == 1
    # (Only channel notifications: a presence update's payload id is a partner's.)
    assert secret["id"] not in {n["message"]["payload"]["id"] for n in heard_by_demo
                                if n["message"]["type"].startswith("mail.channel/")}
    assert all("classified" not in str(n) for n in heard_by_demo)
    assert not any(n["message"]["type"] == "mail.channel/joined" for n in heard_by_demo)

    # An anonymous caller naming only private things hears nothing: the poll times out empty.
    assert poll_as(url, None, 0, [secret["uuid"], "res.partner"]) == []


def test_subscriptions_follow_membership_on_every_poll(short_polls, database_url):
    url = short_polls
    admin, demo = login(url, "admin"), login(url, "demo")
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    first = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": secret["id"],
                                           "post_data": {"body": "before"}}, admin)
    poll_until(url, admin, lambda notes: first["id"] in message_ids(notes))
    assert first["id"] not in message_ids(poll_as(url, demo, 0))
    ok(url, "/mail/channel/add_members", {"channel_id": secret["id"],
                                          "partner_ids": [partner_id(database_url, "demo")]}, admin)
    second = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": secret["id"],
                                            "post_data": {"body": "after"}}, admin)
    assert second["id"] in message_ids(poll_until(url, demo, lambda notes: second["id"] in message_ids(notes)))
    # Logged out, the same client hears nothing of it any more.
    ok(url, "/web/session/destroy", {}, demo)
    assert second["id"] not in message_ids(poll_as(url, demo, 0))


def test_bad_poll_options_are_refused(short_polls):
    body = call(short_polls, "/longpolling/poll", {"channels": [], "last": 0, "options": {"bus_inactivity": "x"}})
    refused(body, INVALID_PARAMS)


@pytest.mark.parametrize("path, params", [
    ("/web/session/authenticate", {"login": "ad\x00min", "password": "admin"}),
    ("/web/session/authenticate", {"login": "admin", "password": "\x00"}),
    ("/mail/message/post", {"thread_model": "mail.channel", "thread_id": 1, "post_data": {"body": "a\x00b"}}),
    ("/mail/message/post", {"thread_model": "mail.channel", "thread_id": 1,
                            "post_data": {"body": "ab", "subtype_xmlid": "\x00"}}),
    ("/mail/channel/create", {"name": "nul\x00"}),
    ("/mail/channel/create", {"name": "ok", "description": "\x00"}),
    ("/mail/partner/search", {"term": "\x00"}),
])
def test_nul_characters_get_a_clear_error(world, path, params):
    before = snapshot(world["database_url"])
    body = call(world["url"], path, params, world["callers"]["member"])
    refused(body, INVALID_PARAMS)
    assert snapshot(world["database_url"]) == before


@pytest.mark.parametrize("inactivity", [float("nan"), float("inf"), -1, "5", True])
def test_bad_inactivity_is_refused(short_polls, inactivity):
    admin = login(short_polls, "admin")
    body = call(short_polls, "/longpolling/poll", {"channels": [], "last": 0,
                                                   "options": {"bus_inactivity": inactivity}}, admin)
    refused(body, INVALID_PARAMS)


def test_odd_but_valid_poll_input_is_served(short_polls, database_url):
    admin = login(short_polls, "admin")
    notes = poll_as(short_polls, admin, 0, ["\x00", "x" * DEFAULT_MAX_CHANNEL_NAME], bus_inactivity=1e300)
    assert notes  # the welcome message at least
    assert query(database_url, "SELECT count(*) FROM bus_presence") == [(1,)]
