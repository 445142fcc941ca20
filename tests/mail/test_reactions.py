"""Reactions: members only, one per partner and emoji, heard by the channel."""

from mail.reactions import MAX_PER_PARTNER
from tests.mail.support import call, channel_id, newest_bus_id, ok, park, partner_id, poll_as, query, refused
from tests.mail.test_message_edit import new_notes, post
from tests.support import INVALID_PARAMS, NOT_FOUND, SESSION_EXPIRED


def react(url, session, message_id, content, route="add_reaction"):
    return call(url, f"/mail/message/{route}", {"message_id": message_id, "content": content}, session)


def test_reactions_group_by_emoji_and_show_in_message_format(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    message = post(url, admin, general, "lunch?")
    admin_p, demo_p = partner_id(database_url, "admin"), partner_id(database_url, "demo")
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "🎉"}, admin)
    groups = react(url, demo, message["id"], "👍")["result"]["messageReactionGroups"]
    assert groups == [
        {"content": "👍", "count": 2, "guests": [], "message": {"id": message["id"]},
         "partners": [{"id": admin_p, "name": "Mitchell Admin"}, {"id": demo_p, "name": "Marc Demo"}]},
        {"content": "🎉", "count": 1, "guests": [], "message": {"id": message["id"]},
         "partners": [{"id": admin_p, "name": "Mitchell Admin"}]},
    ]
    history = ok(url, "/mail/channel/messages", {"channel_id": general}, demo)
    assert [m["messageReactionGroups"] for m in history if m["id"] == message["id"]] == [groups]


def test_reacting_twice_keeps_one_and_removing_takes_only_ones_own(url, admin, demo, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "hi")
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    before = newest_bus_id(database_url)
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    assert newest_bus_id(database_url) == before
    ok(url, "/mail/message/remove_reaction", {"message_id": message["id"], "content": "👍"}, demo)
    assert query(database_url, "SELECT count(*) FROM mail_message_reaction WHERE message_id = %s",
                 (message["id"],)) == [(1,)]
    answer = ok(url, "/mail/message/remove_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    assert answer == {"id": message["id"], "messageReactionGroups": []}
    notes = new_notes(database_url, before)
    assert [n["payload"] for n in notes if n["type"] == "mail.message/insert"][0] == answer


def test_a_public_channel_reaction_is_sent_on_the_uuid_too(url, admin, database_url):
    general = channel_id(database_url, "general")
    uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    message = post(url, admin, general, "hi")
    last = newest_bus_id(database_url)
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "❤️"}, admin)
    assert sorted(tuple(n["channel"]) for n in new_notes(database_url, last)) == sorted(
        [("mail.channel", general), (uuid,)])


def test_non_members_and_anonymous_cannot_react(url, admin, jane, database_url):
    secret = ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, admin)
    message = post(url, admin, secret["id"], "hush")
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    for route in ("add_reaction", "remove_reaction"):
        refused(react(url, jane, message["id"], "👍", route), NOT_FOUND)
        refused(react(url, jane, message["id"] + 1000, "👍", route), NOT_FOUND)
        refused(react(url, None, message["id"], "👍", route), SESSION_EXPIRED)
    assert query(database_url, "SELECT count(*) FROM mail_message_reaction") == [(1,)]


def test_a_reaction_is_one_emoji(url, admin, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "hi")
    for content in ("", " ", "a whole sentence here", "x" * 17):
        refused(react(url, admin, message["id"], content), INVALID_PARAMS)
    refused(call(url, "/mail/message/add_reaction", {"message_id": message["id"]}, admin), INVALID_PARAMS)


def test_one_person_leaves_at_most_twenty_different_reactions(url, admin, demo, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "react a lot")
    emoji = [chr(0x1F600 + i) for i in range(MAX_PER_PARTNER + 1)]
    for content in emoji[:MAX_PER_PARTNER]:
        ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": content}, admin)
    refused(call(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": emoji[-1]}, admin),
            INVALID_PARAMS)
    # Again one already there: still nothing changes, and no refusal.
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": emoji[0]}, admin)
    # Another person has their own twenty.
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": emoji[-1]}, demo)
    assert query(database_url, "SELECT count(*) FROM mail_message_reaction") == [(MAX_PER_PARTNER + 1,)]


def test_a_deleted_message_takes_its_reactions(url, admin, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "hi")
    ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    ok(url, "/mail/message/update_content", {"message_id": message["id"], "body": ""}, admin)
    assert query(database_url, "SELECT count(*) FROM mail_message_reaction") == [(0,)]


def test_a_parked_poller_hears_the_reaction(mail_app, url, admin, demo, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "react to me")
    parked = park(mail_app, url, demo, max(n["id"] for n in poll_as(url, demo)))
    answer = ok(url, "/mail/message/add_reaction", {"message_id": message["id"], "content": "👍"}, admin)
    notes = [(n["message"]["type"], n["message"]["payload"]) for n in parked.result(10)]
    assert [note for note in notes if note[0].startswith("mail.message/")] == [("mail.message/insert", answer)]
