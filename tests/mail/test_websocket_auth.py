"""Who hears what over /websocket on the chat: the same session cookie and
the same poll hook as a long-poll, so the same answers."""
import pytest
import requests

from bus import sendone
from tests.mail.support import login, ok, poll_as, query
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


def test_logging_out_tells_the_socket_then_closes_it_with_4001(mail_app, url, database_url):
    demo = login(url, "demo")
    ws = WebSocketClient(url, cookie=cookie_of(demo))
    try:
        ws.subscribe([], newest_id(database_url))
        wait_for(lambda: mail_app.dispatcher.waiter_count >= 1, 10, "the socket waiting")
        ok(url, "/web/session/destroy", {}, demo)
        heard = []
        while not any(n["message"]["type"] == SESSION_ENDED for n in heard):
            heard += ws.receive(10)
        assert heard[-1]["message"]["type"] == SESSION_ENDED  # the end of its frame, and the last one
        assert ws.close_code(10) == (4001, "session expired: log in again")
    finally:
        ws.close()


def test_a_socket_opened_with_an_ended_session_closes_with_4001_where_a_poll_goes_on_anonymous(url, database_url):
    demo = login(url, "demo")
    stale = cookie_of(demo)
    ok(url, "/web/session/destroy", {}, demo)
    copy = requests.Session()
    copy.cookies.set("session_id", stale.split("=", 1)[1])
    assert poll_as(url, copy, newest_id(database_url), peek=True) == []
    ws = WebSocketClient(url, cookie=stale)
    try:
        ws.subscribe([], 0)
        assert ws.close_code(10)[0] == 4001
    finally:
        ws.close()
