"""Who hears what over /websocket on the chat: the same session cookie and
the same poll hook as a long-poll, so the same answers."""
import pytest

from bus import sendone
from tests.mail.support import channel_id, login, ok, query
from tests.support import wait_for
from tests.ws_client import WebSocketClient

SESSION_ENDED = "res.users/session_ended"
NEW_MESSAGE = "mail.channel/new_message"


@pytest.fixture
def team(url, admin, database_url):
    """A private channel of admin's, with demo in it."""
    demo_partner = query(database_url, "SELECT partner_id FROM res_users WHERE login = 'demo'")[0][0]
    info = ok(url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    ok(url, "/mail/channel/add_members", {"channel_id": info["id"], "partner_ids": [demo_partner]}, admin)
    return info


def newest_id(database_url):
    return query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]


def post(url, session, thread_id, body):
    return ok(url, "/mail/message/post",
              {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body}}, session)


def heard_until_marker(app, ws):
    """The notifications a socket hears up to a marker broadcast now (left out)."""
    with app.database.transaction() as tx:
        sendone(tx, "broadcast", "test/marker", {})
    heard = []
    while not any(n["message"]["type"] == "test/marker" for n in heard):
        heard += ws.receive(10)
    return [n for n in heard if n["message"]["type"] != "test/marker"]


def posted_ids(notes):
    return [n["message"]["payload"]["message"]["id"] for n in notes if n["message"]["type"] == NEW_MESSAGE]


def cookie_of(session):
    return f"session_id={session.cookies['session_id']}"


def test_an_anonymous_socket_cannot_hear_a_private_channel_a_member_does(mail_app, url, admin, team, database_url):
    demo = login(url, "demo")
    member = WebSocketClient(url, cookie=cookie_of(demo))
    stranger = WebSocketClient(url)
    # Another site's page, in the member's browser: its cookie goes along,
    # but the socket is opened as a cross-origin poll is read, without it.
    elsewhere = WebSocketClient(url, origin="https://widget.example", cookie=cookie_of(demo))
    sockets = [member, stranger, elsewhere]
    try:
        last = newest_id(database_url)
        # The stranger names the private channel's uuid: naming it is not enough.
        stranger.subscribe([team["uuid"]], last)
        member.subscribe([], last)
        elsewhere.subscribe([], last)
        wait_for(lambda: mail_app.dispatcher.waiter_count >= 3, 10, "the sockets waiting")
        message = post(url, admin, team["id"], "for the team only")
        assert message["id"] in posted_ids(heard_until_marker(mail_app, member))
        assert posted_ids(heard_until_marker(mail_app, stranger)) == []
        assert posted_ids(heard_until_marker(mail_app, elsewhere)) == []
    finally:
        for ws in sockets:
            ws.close()


def test_after_logging_out_a_socket_hears_the_end_of_its_session_and_then_no_private_channel(
        mail_app, url, admin, team, database_url):
    demo = login(url, "demo")
    ws = WebSocketClient(url, cookie=cookie_of(demo))
    try:
        ws.subscribe([], newest_id(database_url))
        wait_for(lambda: mail_app.dispatcher.waiter_count >= 1, 10, "the socket waiting")
        ok(url, "/web/session/destroy", {}, demo)
        heard = []
        while not any(n["message"]["type"] == SESSION_ENDED for n in heard):
            heard += ws.receive(10)
        after = post(url, admin, channel_id(database_url, "team"), "after the logout")
        assert after["id"] not in posted_ids(heard + heard_until_marker(mail_app, ws))
    finally:
        ws.close()
