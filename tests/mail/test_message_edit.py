"""Editing and deleting messages: the author only, and the channel hears it."""

import pytest

from tests.mail.support import bus_notifications, call, channel_id, newest_bus_id, ok, park, poll_as, query, refused
from tests.support import ACCESS_DENIED, INVALID_PARAMS, NOT_FOUND, SESSION_EXPIRED


def post(url, session, thread_id, body, **post_data):
    return ok(url, "/mail/message/post",
              {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body, **post_data}},
              session)


def new_notes(database_url, last):
    return [n for n in bus_notifications(database_url) if n["id"] > last]



def test_the_author_edits_and_the_channel_and_its_uuid_hear_it(url, admin, database_url):
    general = channel_id(database_url, "general")
    uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    message = post(url, admin, general, "frist")
    last = newest_bus_id(database_url)
    answer = ok(url, "/mail/message/update_content",
                {"message_id": message["id"], "body": "**first**", "attachment_ids": []}, admin)
    assert answer == {"id": message["id"], "body": "<strong>first</strong>"}
    assert query(database_url, "SELECT body FROM mail_message WHERE id = %s", (message["id"],)) == [
        ("<strong>first</strong>",)]
    notes = new_notes(database_url, last)
    assert sorted((tuple(n["channel"]), n["type"]) for n in notes) == sorted([
        (("mail.channel", general), "mail.message/insert"), ((uuid,), "mail.message/insert")])
    assert all(n["payload"] == answer for n in notes)


def test_an_edited_body_is_sanitised(url, admin, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "hello")
    answer = ok(url, "/mail/message/update_content",
                {"message_id": message["id"], "body": '<p onclick="x()">hi<script>alert(1)</script></p>'}, admin)
    assert answer["body"] == "<p>hi</p>"


def test_an_empty_body_deletes_and_notifies_the_delete(url, admin, database_url):
    general = channel_id(database_url, "general")
    parent = post(url, admin, general, "to be removed")
    reply = post(url, admin, general, "a reply", parent_id=parent["id"])
    last = newest_bus_id(database_url)
    answer = ok(url, "/mail/message/update_content", {"message_id": parent["id"], "body": "", "attachment_ids": []},
                admin)
    assert answer == {"message_ids": [parent["id"]]}
    assert query(database_url, "SELECT count(*) FROM mail_message WHERE id = %s", (parent["id"],)) == [(0,)]
    notes = new_notes(database_url, last)
    assert {n["type"] for n in notes} == {"mail.message/delete"}
    assert all(n["payload"] == {"message_ids": [parent["id"]]} for n in notes)
    history = ok(url, "/mail/channel/messages", {"channel_id": general}, admin)
    assert [m["parent_id"] for m in history if m["id"] == reply["id"]] == [False]


@pytest.mark.parametrize("body, plain_text, kept", [
    ("<p><br></p>", False, False),  # Odoo's empty editor
    ("   ", False, False),
    ("<b></b>", True, True),  # typed as text: it shows
])
def test_only_a_body_that_shows_nothing_deletes(url, admin, database_url, body, plain_text, kept):
    message = post(url, admin, channel_id(database_url, "general"), "before")
    answer = ok(url, "/mail/message/update_content",
                {"message_id": message["id"], "body": body, "plain_text": plain_text}, admin)
    remaining = query(database_url, "SELECT body FROM mail_message WHERE id = %s", (message["id"],))
    if kept:
        assert answer == {"id": message["id"], "body": "&lt;b&gt;&lt;/b&gt;"} and remaining == [(answer["body"],)]
    else:
        assert answer == {"message_ids": [message["id"]]} and remaining == []


def test_another_member_may_not_edit_or_delete(url, admin, demo, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "mine")
    before = newest_bus_id(database_url)
    for body in ("changed", ""):
        refused(call(url, "/mail/message/update_content", {"message_id": message["id"], "body": body}, demo),
                ACCESS_DENIED)
    assert query(database_url, "SELECT body FROM mail_message WHERE id = %s", (message["id"],)) == [("mine",)]
    assert newest_bus_id(database_url) == before


def test_a_non_member_cannot_tell_the_message_exists(url, admin, jane, database_url):
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    message = post(url, admin, secret["id"], "hush")
    for message_id in (message["id"], message["id"] + 1000):
        refused(call(url, "/mail/message/update_content", {"message_id": message_id, "body": "x"}, jane), NOT_FOUND)
    assert query(database_url, "SELECT body FROM mail_message WHERE id = %s", (message["id"],)) == [("hush",)]


def test_anonymous_callers_are_asked_to_log_in(url, admin, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "mine")
    refused(call(url, "/mail/message/update_content", {"message_id": message["id"], "body": ""}), SESSION_EXPIRED)
    assert query(database_url, "SELECT count(*) FROM mail_message WHERE id = %s", (message["id"],)) == [(1,)]


@pytest.mark.parametrize("params", [
    {"body": "x"}, {"message_id": "1", "body": "x"}, {"message_id": 1}, {"message_id": 1, "body": 3},
    {"message_id": 1, "body": "x", "attachment_ids": [4]},
])
def test_bad_parameters_are_refused(url, admin, params):
    refused(call(url, "/mail/message/update_content", params, admin), INVALID_PARAMS)


def test_a_parked_poller_hears_the_edit_and_the_delete(mail_app, url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    message = post(url, admin, general, "soon edited")
    last = max(n["id"] for n in poll_as(url, demo))
    for body, expected in (("edited", ("mail.message/insert", {"id": message["id"], "body": "edited"})),
                           ("", ("mail.message/delete", {"message_ids": [message["id"]]}))):
        parked = park(mail_app, url, demo, last)
        ok(url, "/mail/message/update_content", {"message_id": message["id"], "body": body}, admin)
        answer = parked.result(10)
        notes = [(n["message"]["type"], n["message"]["payload"]) for n in answer]
        assert [note for note in notes if note[0].startswith("mail.message/")] == [expected]
        last = max(n["id"] for n in answer)
