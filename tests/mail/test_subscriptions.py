"""Subscriptions from memory: a re-poll runs no SQL statement for what it may
hear, the memory is trusted only as far as this process has read, and a
change that lands while an entry is being derived keeps it from being kept.
(Several processes: tests/mail/test_two_servers.py.)"""
import pytest

from bus import Database, sendone
from mail import channels
from mail.sessions import Session
from tests.mail.support import channel_id, login, ok, partner_id, poll_as, query
from tests.support import ParkedPoll, wait_for


@pytest.fixture
def quiet_app(make_mail_app, clock):
    """A chat that runs no statement unless a request asks for one: no
    garbage collection, no presence sweep, a clock that stands still (so a
    poll finds its presence fresh)."""
    return make_mail_app(clock=clock, gc_interval=3600, presence_sweep_interval=3600, timeout=10)


@pytest.fixture
def writer(database_url):
    """Commits from outside the app, so that they are not counted as its statements."""
    database = Database(database_url, maxconn=2)
    yield database
    database.close()


def caught_up(app, database_url):
    """The app's dispatcher position, once it has read every row committed so far."""
    newest = query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]
    wait_for(lambda: app.dispatcher.position >= newest, 10, "the dispatcher reading every row")
    return app.dispatcher.position


def statements(app):
    return app.database.statements.value


def test_a_repoll_runs_no_statement_for_its_subscriptions(quiet_app, serve, writer, database_url):
    url = serve(quiet_app).url
    sessions = [login(url, "admin"), login(url, "demo"), login(url, "jane")]
    general = channel_id(database_url, "general")
    for session in sessions:  # first polls: presence, and the dispatcher starts
        poll_as(url, session, 0, peek=True)
    last = caught_up(quiet_app, database_url)
    for session in sessions:  # subscriptions from the database, kept
        poll_as(url, session, last, peek=True)

    before = statements(quiet_app)
    for _ in range(10):
        for session in sessions:
            assert poll_as(url, session, last, peek=True) == []
    assert statements(quiet_app) == before

    # Woken by a message: one shared read for all, nothing per poll, and
    # the re-polls that follow cost nothing either.
    reads = quiet_app.dispatcher.reads
    parked = [ParkedPoll(url, [], last, session=session) for session in sessions]
    wait_for(lambda: quiet_app.dispatcher.waiter_count == len(sessions), 10, "the polls parking")
    with writer.transaction() as tx:
        sendone(tx, ("mail.channel", general), "test", {"n": 1})
    newest = [poll.result(10)[-1]["id"] for poll in parked]
    for session, last in zip(sessions, newest):
        assert poll_as(url, session, last, peek=True) == []
    assert statements(quiet_app) - before == quiet_app.dispatcher.reads - reads


def test_a_poll_from_further_than_this_process_has_read_asks_the_database(quiet_app, serve, database_url):
    """A client that heard of a change through another process may poll here
    before this process has read it: what is kept cannot answer for it, and
    what the database answers it is not kept (a client's ``last`` vouches
    for nothing)."""
    url = serve(quiet_app).url
    admin = login(url, "admin")
    poll_as(url, admin, 0, peek=True)
    position = caught_up(quiet_app, database_url)
    poll_as(url, admin, position, peek=True)

    def cost(last):
        before = statements(quiet_app)
        assert poll_as(url, admin, last, peek=True) == []
        return statements(quiet_app) - before

    assert cost(position) == 0
    assert cost(position + 1000) == 1
    assert cost(position + 1000) == 1
    assert cost(position) == 0


def test_a_named_uuid_is_kept_too(quiet_app, serve, database_url):
    url = serve(quiet_app).url
    general_uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE name = 'general'")[0][0]
    poll_as(url, None, 0, [general_uuid, "nothing-at-all"], peek=True)
    position = caught_up(quiet_app, database_url)
    poll_as(url, None, position, [general_uuid, "nothing-at-all"], peek=True)
    before = statements(quiet_app)
    for _ in range(5):
        assert poll_as(url, None, position, [general_uuid, "nothing-at-all"], peek=True) == []
    assert statements(quiet_app) == before


def test_a_change_read_while_an_entry_is_derived_keeps_it_from_being_kept(quiet_app, serve, database_url,
                                                                          monkeypatch):
    """The race the entry's ``valid_from`` is for: the query runs on a
    snapshot taken before a change commits, and the dispatcher reads the
    change before the result would be kept. The change is made to land in
    exactly that gap."""
    url = serve(quiet_app).url
    admin = login(url, "admin")
    team = ok(url, "/mail/channel/create", {"name": "team", "privacy": "private"}, admin)
    ok(url, "/mail/channel/add_members", {"channel_id": team["id"],
                                          "partner_ids": [partner_id(database_url, "demo")]}, admin)
    uid, version = query(database_url, "SELECT id, session_version FROM res_users WHERE login = 'demo'")[0]
    session = Session(uid, version)
    poll_as(url, admin, 0, peek=True)  # the dispatcher starts with the first poll
    position = caught_up(quiet_app, database_url)
    derive = channels.poll_subjects

    def derive_then_change(database, asked, names):
        subjects = derive(database, asked, names)
        ok(url, "/mail/channel/remove_member", {"channel_id": team["id"],
                                                "partner_id": partner_id(database_url, "demo")}, admin)
        caught_up(quiet_app, database_url)
        return subjects

    monkeypatch.setattr(channels, "poll_subjects", derive_then_change)
    cache = quiet_app.subscription_cache
    _, before_change = cache.targets(session, [], position)
    assert ("mail.channel", team["id"]) in before_change  # right for a poll from before the change
    monkeypatch.setattr(channels, "poll_subjects", derive)
    _, after_change = cache.targets(session, [], quiet_app.dispatcher.position)
    assert ("mail.channel", team["id"]) not in after_change


def test_without_the_gap_hold_back_every_poll_reads_the_database(make_mail_app, serve, clock, database_url):
    """Without the gap hold-back, rows can be taken as final past a gap and a
    change never handed over: the cache is off."""
    app = make_mail_app(clock=clock, hold_back_gaps=False, gc_interval=3600, presence_sweep_interval=3600)
    url = serve(app).url
    admin = login(url, "admin")
    poll_as(url, admin, 0, peek=True)
    position = caught_up(app, database_url)
    before = statements(app)
    poll_as(url, admin, position, peek=True)
    assert statements(app) - before == 1
