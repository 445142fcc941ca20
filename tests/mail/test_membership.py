"""Changing what someone hears: leaving, removing a member, a channel's
privacy, a new password, logging out. Who may, what each tells whom, and
that a refusal writes nothing. Every change ends the answer of a poll that
was parked with what it may no longer hear."""
import pytest
import requests

from bus import sendone
from tests.mail.support import (
    bus_notifications,
    call,
    channel_id,
    error_name,
    login,
    message_ids,
    newest_bus_id,
    ok,
    park,
    partner_id,
    poll_as,
    poll_until,
    query,
    snapshot,
)
from tests.support import ACCESS_DENIED, INVALID_PARAMS, NOT_FOUND, SESSION_EXPIRED

SESSION_ENDED = "res.users/session_ended"


def post(url, session, thread_id, body):
    return ok(url, "/mail/message/post",
              {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body}}, session)



def notes_since(database_url, last):
    return [(tuple(n["channel"]), n["type"], n["payload"]) for n in bus_notifications(database_url) if n["id"] > last]


def heard_until_marker(app, url, session, last, channels=()):
    """Everything a client polling from ``last`` hears up to a marker sent
    to everyone now, marker left out: once it has come, whatever was
    committed before it has been read."""
    with app.database.transaction() as tx:
        sendone(tx, "broadcast", "test/marker", {})
    notes = poll_until(url, session, lambda notes: any(n["message"]["type"] == "test/marker" for n in notes),
                       channels=list(channels), since=last)
    return [n for n in notes if n["message"]["type"] != "test/marker"]


def answer_holding(app, url, session, database_url, kind, change, channels=()):
    """Park a poll from the newest row, once the app has read every row (so
    only what comes next can wake it), make ``change`` (which returns what
    it wants kept), and return the poll's answer, which must hold a
    ``kind`` notification, and what ``change`` returned."""
    parked = park(app, url, session, newest_bus_id(database_url), tuple(channels))
    changed = change()
    answer = parked.result(10)
    assert any(n["message"]["type"] == kind for n in answer), answer
    return answer, changed


def members(database_url, channel):
    rows = query(database_url, "SELECT partner_id FROM mail_channel_partner WHERE channel_id = %s ORDER BY partner_id",
                 (channel,))
    return [row[0] for row in rows]


@pytest.fixture
def people(database_url):
    return {name: partner_id(database_url, name) for name in ("admin", "demo", "jane", "joel")}


@pytest.fixture
def team(url, admin, people):
    """A private channel owned by admin, with demo and jane in it."""
    info = ok(url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    ok(url, "/mail/channel/add_members", {"channel_id": info["id"], "partner_ids": [people["demo"], people["jane"]]},
       admin)
    return info


def refused(url, path, params, session, database_url, name):
    """Call ``path`` expecting the error ``name``, and check it wrote nothing."""
    before = snapshot(database_url)
    body = call(url, path, params, session)
    assert error_name(body) == name, body
    assert snapshot(database_url) == before, "a refused call wrote something"
    return body


# -- creating ---------------------------------------------------------------------


def test_creating_a_channel_tells_the_creator(url, admin, people, database_url):
    last = newest_bus_id(database_url)
    info = ok(url, "/mail/channel/create", {"name": "fresh"}, admin)
    [(channel, kind, payload)] = notes_since(database_url, last)
    assert channel == ("res.partner", people["admin"]) and kind == "mail.channel/joined"
    assert payload["id"] == info["id"] and payload["is_member"]


# -- leaving --------------------------------------------------------------------


def test_a_member_leaves_and_is_told(url, team, people, database_url):
    demo = login(url, "demo")
    last = newest_bus_id(database_url)
    assert ok(url, "/mail/channel/leave", {"channel_id": team["id"]}, demo) is True
    assert members(database_url, team["id"]) == sorted([people["admin"], people["jane"]])
    [(channel, kind, payload)] = notes_since(database_url, last)
    assert channel == ("res.partner", people["demo"]) and kind == "mail.channel/leave"
    assert payload["id"] == team["id"] and payload["is_pinned"] is False
    assert team["id"] not in [c["id"] for c in ok(url, "/mail/init_messaging", {}, demo)["channels"]]
    # Gone: the channel is now like any other private channel to demo.
    refused(url, "/mail/channel/leave", {"channel_id": team["id"]}, demo, database_url, NOT_FOUND)
    assert error_name(call(url, "/mail/channel/messages", {"channel_id": team["id"]}, demo)) == NOT_FOUND


def test_leaving_is_for_members_of_channels_and_groups(url, admin, team, people, database_url):
    joel = login(url, "joel")
    refused(url, "/mail/channel/leave", {"channel_id": team["id"]}, joel, database_url, NOT_FOUND)
    body = refused(url, "/mail/channel/leave", {"channel_id": team["id"]}, requests.Session(), database_url,
                   SESSION_EXPIRED)
    assert body["error"]["code"] == 100
    refused(url, "/mail/channel/leave", {"channel_id": "x"}, admin, database_url, INVALID_PARAMS)
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [people["jane"]]}, admin)
    refused(url, "/mail/channel/leave", {"channel_id": chat["id"]}, admin, database_url, INVALID_PARAMS)
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["jane"], people["demo"]]}, admin)
    assert ok(url, "/mail/channel/leave", {"channel_id": group["id"]}, login(url, "jane")) is True
    assert members(database_url, group["id"]) == sorted([people["admin"], people["demo"]])


def test_leaving_ends_a_parked_poll_before_the_next_message(mail_app, url, team, admin, database_url):
    demo = login(url, "demo")
    poll_as(url, demo)  # its first poll: its presence is written, the dispatcher starts

    def leave():
        ok(url, "/mail/channel/leave", {"channel_id": team["id"]}, demo)
        return post(url, admin, team["id"], "you missed this")

    notes, after = answer_holding(mail_app, url, demo, database_url, "mail.channel/leave", leave)
    assert notes[-1]["message"]["type"] == "mail.channel/leave"
    assert after["id"] not in message_ids(notes)
    assert after["id"] not in message_ids(heard_until_marker(mail_app, url, demo, notes[-1]["id"]))


# -- removing a member -------------------------------------------------------------


def test_the_owner_removes_a_member(url, admin, team, people, database_url):
    last = newest_bus_id(database_url)
    info = ok(url, "/mail/channel/remove_member", {"channel_id": team["id"], "partner_id": people["demo"]}, admin)
    assert sorted(m["id"] for m in info["members"]) == sorted([people["admin"], people["jane"]])
    [(channel, kind, payload)] = notes_since(database_url, last)
    assert channel == ("res.partner", people["demo"]) and kind == "mail.channel/leave"
    assert payload["id"] == team["id"] and payload["is_pinned"] is False


def test_who_may_remove_whom(url, admin, team, people, database_url):
    demo, joel = login(url, "demo"), login(url, "joel")

    def remove(channel, partner, session, expected):
        params = {"channel_id": channel, "partner_id": partner}
        return refused(url, "/mail/channel/remove_member", params, session, database_url, expected)

    # In a named channel only the owner removes others; a stranger is told
    # nothing exists; so is an anonymous caller, to log in first.
    remove(team["id"], people["jane"], demo, ACCESS_DENIED)
    remove(team["id"], people["admin"], demo, ACCESS_DENIED)
    remove(team["id"], people["jane"], joel, NOT_FOUND)
    assert remove(team["id"], people["jane"], requests.Session(), SESSION_EXPIRED)["error"]["code"] == 100
    remove(team["id"], people["joel"], admin, INVALID_PARAMS)  # not a member
    remove(team["id"], "jane", admin, INVALID_PARAMS)
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [people["jane"]]}, admin)
    remove(chat["id"], people["jane"], admin, INVALID_PARAMS)
    # Removing oneself is leaving, which any member may.
    ok(url, "/mail/channel/remove_member", {"channel_id": team["id"], "partner_id": people["demo"]}, demo)
    # In a group, as anyone may invite, anyone may remove.
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["jane"], people["demo"]]}, admin)
    ok(url, "/mail/channel/remove_member", {"channel_id": group["id"], "partner_id": people["admin"]}, demo)
    assert members(database_url, group["id"]) == sorted([people["demo"], people["jane"]])


def test_the_owner_who_leaves_hands_the_channel_to_the_longest_member(url, admin, team, people, database_url):
    ok(url, "/mail/channel/leave", {"channel_id": team["id"]}, admin)
    demo, jane = login(url, "demo"), login(url, "jane")
    refused(url, "/mail/channel/remove_member", {"channel_id": team["id"], "partner_id": people["demo"]}, jane,
            database_url, ACCESS_DENIED)
    ok(url, "/mail/channel/remove_member", {"channel_id": team["id"], "partner_id": people["jane"]}, demo)
    assert members(database_url, team["id"]) == [people["demo"]]


# -- privacy ----------------------------------------------------------------------


def test_the_owner_makes_a_channel_private_and_its_uuid_listeners_are_told(url, admin, people, database_url):
    open_channel = ok(url, "/mail/channel/create", {"name": "open"}, admin)
    last = newest_bus_id(database_url)
    info = ok(url, "/mail/channel/set_privacy", {"channel_id": open_channel["id"], "privacy": "private"}, admin)
    assert info["public"] == "private"
    payload = {"id": open_channel["id"], "public": "private"}
    assert notes_since(database_url, last) == [(("mail.channel", open_channel["id"]), "mail.channel/insert", payload),
                                               ((open_channel["uuid"],), "mail.channel/insert", payload)]
    # Unchanged privacy: nothing to tell.
    last = newest_bus_id(database_url)
    ok(url, "/mail/channel/set_privacy", {"channel_id": open_channel["id"], "privacy": "private"}, admin)
    assert notes_since(database_url, last) == []
    assert error_name(call(url, "/mail/channel/join", {"channel_id": open_channel["id"]}, login(url, "demo"))) \
        == NOT_FOUND
    ok(url, "/mail/channel/set_privacy", {"channel_id": open_channel["id"], "privacy": "public"}, admin)
    ok(url, "/mail/channel/join", {"channel_id": open_channel["id"]}, login(url, "demo"))


def test_who_may_change_privacy(url, admin, team, people, database_url):
    def change(channel, privacy, session, expected):
        params = {"channel_id": channel, "privacy": privacy}
        return refused(url, "/mail/channel/set_privacy", params, session, database_url, expected)

    change(team["id"], "public", login(url, "demo"), ACCESS_DENIED)
    change(team["id"], "public", login(url, "joel"), NOT_FOUND)
    assert change(team["id"], "public", requests.Session(), SESSION_EXPIRED)["error"]["code"] == 100
    change(team["id"], "everyone", admin, INVALID_PARAMS)
    change(team["id"], None, admin, INVALID_PARAMS)
    group = ok(url, "/mail/channel/create_group", {"partner_ids": [people["jane"]]}, admin)
    change(group["id"], "public", admin, INVALID_PARAMS)


def test_an_anonymous_uuid_listener_stops_hearing_a_channel_made_private(mail_app, url, admin, database_url):
    general = channel_id(database_url, "general")
    general_uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    before = post(url, admin, general, "still public")
    heard = poll_as(url, None, 0, [general_uuid])
    assert before["id"] in message_ids(heard)

    def make_private():
        ok(url, "/mail/channel/set_privacy", {"channel_id": general, "privacy": "private"}, admin)
        return post(url, admin, general, "members only")

    notes, after = answer_holding(mail_app, url, None, database_url, "mail.channel/insert", make_private,
                                  [general_uuid])
    assert notes[-1]["message"]["type"] == "mail.channel/insert"
    assert after["id"] not in message_ids(notes)
    assert heard_until_marker(mail_app, url, None, notes[-1]["id"], [general_uuid]) == []


# -- sessions ---------------------------------------------------------------------


def change_password(url, session, old, new, confirm=None):
    """Odoo's form fields, as its client sends them."""
    fields = [{"name": "old_pwd", "value": old}, {"name": "new_password", "value": new},
              {"name": "confirm_pwd", "value": new if confirm is None else confirm}]
    return call(url, "/web/session/change_password", {"fields": fields}, session)


def test_logging_out_tells_the_user_and_ends_its_parked_polls(mail_app, url, admin, people, database_url):
    demo = login(url, "demo")
    copy = requests.Session()
    copy.cookies.set("session_id", demo.cookies["session_id"])
    poll_as(url, copy)  # its first poll: its presence is written, the dispatcher starts
    mark = newest_bus_id(database_url)

    def log_out():
        ok(url, "/web/session/destroy", {}, demo)
        return post(url, admin, channel_id(database_url, "general"), "after the logout")

    notes, after = answer_holding(mail_app, url, copy, database_url, SESSION_ENDED, log_out)
    assert (("res.partner", people["demo"]), SESSION_ENDED, {}) in notes_since(database_url, mark)
    assert notes[-1]["message"]["type"] == SESSION_ENDED
    assert after["id"] not in message_ids(notes)
    assert heard_until_marker(mail_app, url, copy, notes[-1]["id"]) == []


def test_changing_the_password_ends_every_other_session(mail_app, url, people, database_url):
    demo = login(url, "demo")
    elsewhere = login(url, "demo")
    poll_as(url, elsewhere)  # its first poll: its presence is written, the dispatcher starts
    mark = newest_bus_id(database_url)
    notes, answer = answer_holding(mail_app, url, elsewhere, database_url, SESSION_ENDED,
                                   lambda: change_password(url, demo, "demo", "s3cret"))
    assert answer["result"] == {"new_password": "s3cret"}
    assert [kind for channel, kind, _ in notes_since(database_url, mark)] == [SESSION_ENDED]
    assert notes[-1]["message"]["type"] == SESSION_ENDED
    # The caller goes on with its fresh cookie; the other session is over.
    assert ok(url, "/web/session/get_session_info", {}, demo)["partner_id"] == people["demo"]
    assert ok(url, "/web/session/get_session_info", {}, elsewhere)["uid"] is False
    assert error_name(call(url, "/web/session/authenticate", {"login": "demo", "password": "demo"})) \
        == ACCESS_DENIED
    assert ok(url, "/web/session/get_session_info", {}, login(url, "demo", "s3cret"))["partner_id"] == people["demo"]


def test_a_password_change_that_does_not_add_up_changes_nothing(url, database_url):
    demo = login(url, "demo")
    before = snapshot(database_url), query(database_url, "SELECT password, session_version FROM res_users")
    for old, new, confirm, error in [
        ("wrong", "s3cret", None, "The old password you provided is incorrect, your password was not changed."),
        ("demo", "s3cret", "s3cre7", "The new password and its confirmation must be identical."),
        ("demo", "  ", None, "You cannot leave any password empty."),
        ("", "s3cret", None, "You cannot leave any password empty."),
    ]:
        assert change_password(url, demo, old, new, confirm)["result"] == {"error": error, "title": "Change Password"}
    for bad in [{}, {"fields": "old_pwd=demo"}, {"fields": [{"name": "old_pwd"}]}, {"fields": [["old_pwd", "x"]]},
                {"fields": [{"name": "old_pwd", "value": "de\x00mo"}]}]:
        assert error_name(call(url, "/web/session/change_password", bad, demo)) == INVALID_PARAMS, bad
    body = change_password(url, requests.Session(), "demo", "s3cret")
    assert error_name(body) == SESSION_EXPIRED and body["error"]["code"] == 100
    assert (snapshot(database_url), query(database_url, "SELECT password, session_version FROM res_users")) == before
    assert ok(url, "/web/session/get_session_info", {}, demo)["username"] == "demo"
