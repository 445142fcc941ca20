"""Two chat server processes on one database, each keeping subscriptions in
memory: a change made through one while the user's poll is parked in the
other ends that poll's answer, and from then on nothing it may no longer
hear reaches that client, whichever process it polls next (the client goes
back and forth, as behind a load balancer, so it also polls a process that
has not read the change yet). And a new member hears its channel from the
first message."""
import json
import sys
import time

import pytest
import requests

from bus import Database, sendone
from tests.bus.test_servers import ServerProcess
from tests.mail.support import channel_id, login, message_ids, ok, partner_id
from tests.support import ParkedPoll, poll

MARKER = "test/marker"


def chat_server(kind, database_url, log_dir):
    """``python -m mail.demo`` on the test's database, in a process of its own."""
    def argv(port):
        return [sys.executable, "-m", "mail.demo", "--db-url", database_url, "--port", str(port),
                "--server", kind, "--poll-timeout", "20"]
    return ServerProcess(kind, database_url, log_dir, argv=argv)


@pytest.fixture(params=[("gevent", "threaded"), ("threaded", "gevent")], ids=["to-threaded", "to-gevent"])
def servers(request, database_url, tmp_path):
    """Where changes are made, and where the poll is parked (each kind of
    server in each part)."""
    started = []
    try:
        for kind in request.param:
            started.append(chat_server(kind, database_url, tmp_path))
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def writer(database_url):
    database = Database(database_url, maxconn=2)
    yield database
    database.close()


def say(url, session, channel, body):
    return ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": channel,
                                          "post_data": {"body": body}}, session)


def follow(servers, writer, session, last, channels=()):
    """Poll like a client from ``last``, one process after the other, until
    a marker sent to everyone now comes; what came before it."""
    with writer.transaction() as tx:
        sendone(tx, "broadcast", MARKER, {})
    heard = []
    deadline = time.monotonic() + 30
    turn = 0
    while not any(n["message"]["type"] == MARKER for n in heard):
        assert time.monotonic() < deadline, "the marker never came"
        answer = poll(servers[turn % len(servers)].url, list(channels), last, session=session)
        heard.extend(answer)
        last = max([last, *(n["id"] for n in answer)])
        turn += 1
    return [n for n in heard if n["message"]["type"] != MARKER], last


def park(server, session, last, channels=()):
    """A poll parked in ``server`` (checked still waiting a moment later)."""
    parked = ParkedPoll(server.url, list(channels), last, session=session)
    time.sleep(0.5)
    assert not parked.done.is_set(), parked.result(1)
    return parked


def about(notes, channel):
    """The notifications that say anything of ``channel`` (its messages, its
    typing, its seen markers), or carry its messages' text."""
    return [n for n in notes
            if (n["message"]["type"].startswith("mail.channel") and
                channel in (n["message"]["payload"].get("id"), n["message"]["payload"].get("channel_id")))
            or "classified" in json.dumps(n)]


@pytest.fixture
def team(servers, database_url):
    """admin's private channel "team", with demo in it; everyone has polled
    once (presence written), so that later polls are woken only by what the
    test does."""
    change, _ = servers
    admin, demo = login(change.url, "admin"), login(change.url, "demo")
    info = ok(change.url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    ok(change.url, "/mail/channel/add_members",
       {"channel_id": info["id"], "partner_ids": [partner_id(database_url, "demo")]}, admin)
    return {"id": info["id"], "admin": admin, "demo": demo, "demo_partner": partner_id(database_url, "demo")}


def caught_up(servers, writer, session, channels=()):
    """Where a client is once it has polled each process (its presence is
    written there) and the last one has read everything so far."""
    last = 0
    for server in servers:
        _, last = follow([server], writer, session, last, channels)
    return last


@pytest.mark.slow
def test_a_removed_member_hears_nothing_more_of_the_channel(servers, writer, team):
    change, parked_in = servers
    admin, demo = team["admin"], team["demo"]
    caught_up(servers, writer, admin)
    last = caught_up(servers, writer, demo)
    parked = park(parked_in, demo, last)
    ok(change.url, "/mail/channel/remove_member", {"channel_id": team["id"], "partner_id": team["demo_partner"]},
       admin)
    secrets = [say(change.url, admin, team["id"], f"classified {n}")["id"] for n in range(3)]
    answer = parked.result(10)
    assert answer[-1]["message"]["type"] == "mail.channel/leave"
    heard, _ = follow(servers, writer, demo, answer[-1]["id"])
    assert about(heard, team["id"]) == []
    # The channel went on without demo.
    assert set(secrets) <= set(message_ids(follow(servers, writer, admin, last)[0]))


@pytest.mark.slow
def test_a_new_member_hears_the_channel_from_its_first_message(servers, writer, database_url):
    change, parked_in = servers
    admin, jane = login(change.url, "admin"), login(change.url, "jane")
    team = ok(change.url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    caught_up(servers, writer, admin)
    last = caught_up(servers, writer, jane)
    parked = park(parked_in, jane, last)
    ok(change.url, "/mail/channel/add_members",
       {"channel_id": team["id"], "partner_ids": [partner_id(database_url, "jane")]}, admin)
    first = say(change.url, admin, team["id"], "welcome, jane")
    answer = parked.result(10)
    assert answer[-1]["message"]["type"] == "mail.channel/joined"
    heard, _ = follow(servers, writer, jane, answer[-1]["id"])
    assert first["id"] in message_ids(heard)


@pytest.mark.slow
def test_a_channel_made_private_is_heard_no_more_by_its_uuid(servers, writer, database_url):
    change, parked_in = servers
    admin, joel = login(change.url, "admin"), login(change.url, "joel")
    lobby = ok(change.url, "/mail/channel/create", {"name": "lobby"}, admin)
    names = [lobby["uuid"]]
    say(change.url, admin, lobby["id"], "open to all")
    caught_up(servers, writer, admin)
    listeners = {"anonymous": requests.Session(), "logged-in non-member": joel}
    for session in listeners.values():
        last = caught_up(servers, writer, session, names)
    # From the newest marker, which each listener would only hear again.
    parked = {who: park(parked_in, session, last, names) for who, session in listeners.items()}
    ok(change.url, "/mail/channel/set_privacy", {"channel_id": lobby["id"], "privacy": "private"}, admin)
    say(change.url, admin, lobby["id"], "classified: members only")
    for who, session in listeners.items():
        answer = parked[who].result(10)
        assert answer[-1]["message"]["type"] == "mail.channel/insert", who
        heard, _ = follow(servers, writer, session, answer[-1]["id"], names)
        assert about(heard, lobby["id"]) == [], who


@pytest.mark.slow
def test_after_logout_nothing_private_reaches_the_client(servers, writer, team, database_url):
    change, parked_in = servers
    admin, demo = team["admin"], team["demo"]
    chat = ok(change.url, "/mail/channel/get_or_create_chat", {"partner_ids": [team["demo_partner"]]}, admin)
    caught_up(servers, writer, admin)
    last = caught_up(servers, writer, demo)
    parked = park(parked_in, demo, last)
    stolen = requests.Session()
    stolen.cookies.set("session_id", demo.cookies["session_id"])
    ok(change.url, "/web/session/destroy", {}, demo)
    say(change.url, admin, team["id"], "classified: in the channel")
    say(change.url, admin, chat["id"], "classified: in the chat")
    say(change.url, admin, channel_id(database_url, "general"), "classified: in general")
    answer = parked.result(10)
    assert answer[-1]["message"]["type"] == "res.users/session_ended"
    # A copy of the cookie is worth no more than no cookie: broadcast only.
    heard, _ = follow(servers, writer, stolen, answer[-1]["id"])
    assert heard == []


@pytest.mark.slow
def test_after_a_password_change_other_sessions_hear_nothing_private(servers, writer, team):
    change, parked_in = servers
    admin, demo = team["admin"], team["demo"]
    elsewhere = login(change.url, "demo")
    caught_up(servers, writer, admin)
    last = caught_up(servers, writer, elsewhere)
    parked = park(parked_in, elsewhere, last)
    fields = [{"name": "old_pwd", "value": "demo"}, {"name": "new_password", "value": "s3cret"},
              {"name": "confirm_pwd", "value": "s3cret"}]
    assert ok(change.url, "/web/session/change_password", {"fields": fields}, demo) == {"new_password": "s3cret"}
    secret = say(change.url, admin, team["id"], "classified: after the change")
    answer = parked.result(10)
    assert answer[-1]["message"]["type"] == "res.users/session_ended"
    heard, _ = follow(servers, writer, elsewhere, answer[-1]["id"])
    assert heard == []
    # The session that changed the password goes on hearing the channel.
    assert secret["id"] in message_ids(follow(servers, writer, demo, last)[0])

