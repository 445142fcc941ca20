"""Presence: polls keep a partner online; silence makes them offline after
55 s, inactivity away after 30 min. The clock is injected, nothing sleeps."""
import threading
import time
from datetime import datetime, timedelta

import pytest

from mail import presence
from tests.mail.support import bus_notifications, call, channel_id, error_name, login, ok, partner_id, poll_as, query
from tests.support import INVALID_PARAMS, wait_for

T0 = datetime(2024, 1, 1, 12, 0, 0)


@pytest.mark.parametrize("poll_age, presence_age, expected", [
    (timedelta(0), timedelta(0), "online"),
    (timedelta(seconds=55), timedelta(seconds=55), "online"),
    (timedelta(seconds=56), timedelta(seconds=56), "offline"),
    (timedelta(seconds=10), timedelta(minutes=30), "online"),
    (timedelta(seconds=10), timedelta(minutes=30, seconds=1), "away"),
    (timedelta(minutes=2), timedelta(minutes=40), "offline"),
])
def test_status_rules(poll_age, presence_age, expected):
    assert presence.im_status(T0 - poll_age, T0 - presence_age, T0) == expected


def test_never_polled_is_offline():
    assert presence.im_status(None, None, T0) == "offline"


@pytest.fixture
def timed(make_mail_app, serve, clock):
    """A chat on the test's clock, whose polls return after 1 s."""
    return serve(make_mail_app(timeout=1, clock=clock)).url


def status_of(url, session, partner):
    [entry] = ok(url, "/longpolling/im_status", {"partner_ids": [partner]}, session)
    return entry["im_status"]


def test_polls_drive_the_status(timed, clock, database_url):
    admin, demo = login(timed, "admin"), login(timed, "demo")
    marc = partner_id(database_url, "demo")
    assert status_of(timed, admin, marc) == "offline"
    poll_as(timed, demo, 0, bus_inactivity=0)
    assert status_of(timed, admin, marc) == "online"
    clock.advance(seconds=50)
    assert status_of(timed, admin, marc) == "online"
    clock.advance(seconds=10)
    assert status_of(timed, admin, marc) == "offline"
    # Half an hour later the tab polls again, but nobody touched it.
    clock.advance(minutes=31)
    poll_as(timed, demo, 0, bus_inactivity=31 * 60 * 1000)
    assert status_of(timed, admin, marc) == "away"
    poll_as(timed, demo, 0, bus_inactivity=0)  # back at the keyboard
    assert status_of(timed, admin, marc) == "online"
    general = ok(timed, "/mail/init_messaging", {}, admin)["channels"][0]
    assert {m["name"]: m["im_status"] for m in general["members"]}["Marc Demo"] == "online"


def test_coming_online_is_pushed_to_the_partners_channels(timed, clock, database_url):
    demo = login(timed, "demo")
    marc = partner_id(database_url, "demo")
    general = channel_id(database_url, "general")

    def pushes():
        return [(tuple(n["channel"]), n["payload"]) for n in bus_notifications(database_url)
                if n["type"] == "bus/im_status"]

    poll_as(timed, demo, 0)
    online = {"id": marc, "partner_id": marc, "im_status": "online"}
    assert pushes() == [(("mail.channel", general), online)]
    written = query(database_url, "SELECT last_poll FROM bus_presence WHERE partner_id = %s", (marc,))
    # A poll soon after neither rewrites the row nor pushes anything.
    clock.advance(seconds=3)
    poll_as(timed, demo, 0)
    assert query(database_url, "SELECT last_poll FROM bus_presence WHERE partner_id = %s", (marc,)) == written
    # Stale, still online: written by the next flush of queued refreshes.
    clock.advance(seconds=3)
    poll_as(timed, demo, 0)
    wait_for(lambda: query(database_url, "SELECT last_poll FROM bus_presence WHERE partner_id = %s", (marc,))
             == [(T0 + timedelta(seconds=6),)], 5, "the queued refresh written")
    assert len(pushes()) == 1
    # After a silence, the next poll announces the return.
    clock.advance(minutes=5)
    poll_as(timed, demo, 0)
    assert pushes() == [(("mail.channel", general), online)] * 2


def test_logout_pushes_offline(timed, database_url):
    demo = login(timed, "demo")
    marc = partner_id(database_url, "demo")
    poll_as(timed, demo, 0)
    ok(timed, "/web/session/destroy", {}, demo)
    last = [n for n in bus_notifications(database_url) if n["type"] == "bus/im_status"][-1]
    assert last["payload"] == {"id": marc, "partner_id": marc, "im_status": "offline"}
    admin = login(timed, "admin")
    assert status_of(timed, admin, marc) == "offline"


def test_im_status_route(timed, database_url):
    admin = login(timed, "admin")
    marc, mitchell = partner_id(database_url, "demo"), partner_id(database_url, "admin")
    answer = ok(timed, "/longpolling/im_status", {"partner_ids": [mitchell, marc, 99999]}, admin)
    assert answer == [{"id": mitchell, "im_status": "offline"}, {"id": marc, "im_status": "offline"}]
    for bad in [{}, {"partner_ids": "1"}, {"partner_ids": [1.5]}, {"partner_ids": list(range(2000))}]:
        assert error_name(call(timed, "/longpolling/im_status", bad, admin)) == INVALID_PARAMS


def test_concurrent_presence_updates_never_fail(mail_app, database_url):
    marc = partner_id(database_url, "demo")
    errors = []
    barrier = threading.Barrier(8)

    def hammer(offset):
        barrier.wait()
        try:
            for step in range(5):
                presence.update(mail_app.database, marc, 0, T0 + timedelta(seconds=offset + 10 * step))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert query(database_url, "SELECT count(*) FROM bus_presence WHERE partner_id = %s", (marc,)) == [(1,)]


def test_concurrent_polls_of_one_user_all_succeed(timed):
    demo = login(timed, "demo")
    results = []

    def one():
        results.append(call(timed, "/longpolling/poll", {"channels": [], "last": 0, "options": {}}, demo))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 10 and all(r["status"] == 200 and "result" in r for r in results)


def im_status_pushes(database_url):
    return [(tuple(n["channel"]), n["payload"]["partner_id"], n["payload"]["im_status"])
            for n in bus_notifications(database_url) if n["type"] == "bus/im_status"]


def test_repeated_polls_of_a_fresh_partner_write_nothing(make_mail_app, serve, clock, database_url):
    app = make_mail_app(timeout=1, clock=clock)
    url = serve(app).url
    demo = login(url, "demo")
    marc = partner_id(database_url, "demo")
    poll_as(url, demo, 0)
    row_version = "SELECT xmin::text, xmax::text FROM bus_presence WHERE partner_id = %s"
    written = query(database_url, row_version, (marc,))
    for _ in range(3):
        clock.advance(seconds=1)
        poll_as(url, demo, 0, bus_inactivity=500)
    # Neither updated (xmin) nor even locked (xmax) by the later polls.
    assert query(database_url, row_version, (marc,)) == written
    # The process remembers what it wrote: no query at all for presence.
    statements = app.database.statements.value
    for _ in range(5):
        assert app.presence.poll(marc, 0, clock()) is None
    assert app.database.statements.value == statements
    # Stale again, still online: the refresh waits for the next flush (the
    # sweeper, which flushes every second, is stopped so that this one is it).
    app.presence_sweeper.stop()
    clock.advance(seconds=3)
    assert app.presence.poll(marc, 0, clock()) is None
    assert app.database.statements.value == statements
    assert query(database_url, row_version, (marc,)) == written
    assert app.presence.flush() == {}
    assert app.database.statements.value == statements + 1
    assert query(database_url, row_version, (marc,)) != written


def test_queued_refreshes_are_one_statement_and_changes_are_written_at_once(mail_app, database_url):
    tracker = presence.PresenceTracker(mail_app.database)
    marc, jane = partner_id(database_url, "demo"), partner_id(database_url, "jane")
    assert tracker.poll(marc, 0, T0) == "online"  # not seen lately: written and pushed in the poll
    assert tracker.poll(jane, 0, T0) == "online"
    later = T0 + timedelta(seconds=10)
    statements = mail_app.database.statements.value
    assert tracker.poll(marc, 0, later) is None
    assert tracker.poll(jane, 0, later) is None
    assert mail_app.database.statements.value == statements  # queued
    assert tracker.flush() == {}
    assert mail_app.database.statements.value == statements + 1
    assert query(database_url, "SELECT last_poll FROM bus_presence WHERE partner_id = ANY(%s)",
                 ([marc, jane],)) == [(later,), (later,)]
    # Idle for 31 minutes (the tab reports it), then back: each a change,
    # written and pushed by the poll itself.
    away = T0 + timedelta(minutes=31)
    assert tracker.poll(marc, 31 * 60 * 1000, away) == "away"
    back = away + timedelta(seconds=6)
    assert tracker.poll(marc, 0, back) == "online"
    general = ("mail.channel", channel_id(database_url, "general"))
    assert [status for channel, pid, status in im_status_pushes(database_url)
            if pid == marc and channel == general] == ["online", "away", "online"]


def test_a_flush_after_a_logout_does_not_bring_the_row_back(mail_app, database_url):
    tracker = presence.PresenceTracker(mail_app.database)
    marc = partner_id(database_url, "demo")
    tracker.poll(marc, 0, T0)
    tracker.poll(marc, 0, T0 + timedelta(seconds=10))  # queued
    with mail_app.database.transaction() as tx:
        presence.disconnect(tx, marc)  # another process's logout: this one was not told
    assert tracker.flush() == {}
    assert query(database_url, "SELECT count(*) FROM bus_presence WHERE partner_id = %s", (marc,)) == [(0,)]
    # Back (logged in again) within the 30 s: the row is written anew by
    # the poll, not queued for an UPDATE that would find nothing.
    assert tracker.poll(marc, 0, T0 + timedelta(seconds=12)) == "online"
    assert query(database_url, "SELECT count(*) FROM bus_presence WHERE partner_id = %s", (marc,)) == [(1,)]


def test_a_queued_refresh_claims_a_change_pushed_meanwhile_once(mail_app, database_url):
    tracker = presence.PresenceTracker(mail_app.database)
    marc = partner_id(database_url, "demo")
    tracker.poll(marc, 0, T0)
    later = T0 + timedelta(seconds=20)
    assert tracker.poll(marc, 0, later) is None  # queued
    # Meanwhile the row reads as silent to another process's sweep.
    with mail_app.database.transaction() as tx:
        tx.execute("UPDATE bus_presence SET pushed_status = 'offline' WHERE partner_id = %s", (marc,))
    assert tracker.flush() == {marc: "online"}
    assert tracker.flush() == {}


def test_a_fresh_row_costs_no_transaction_id(mail_app, database_url):
    marc = partner_id(database_url, "demo")
    presence.update(mail_app.database, marc, 0, T0)
    later = T0 + timedelta(seconds=2)
    with mail_app.database.transaction() as tx:
        assert presence.record_poll(tx, marc, later, later) is None
        assert tx.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is None
    stale = T0 + timedelta(seconds=6)
    with mail_app.database.transaction() as tx:
        assert presence.record_poll(tx, marc, stale, stale) is None  # still online: nothing to push
        assert tx.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is not None


def test_concurrent_polls_push_each_change_once(mail_app, database_url):
    marc = partner_id(database_url, "demo")
    general = channel_id(database_url, "general")

    def together(now):
        barrier = threading.Barrier(8)
        results, errors = [], []

        def one():
            barrier.wait()
            try:
                results.append(presence.update(mail_app.database, marc, 0, now))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        return sorted(results, key=lambda status: status is None)

    assert together(T0) == ["online"] + [None] * 7  # first poll ever: the row is inserted once
    assert together(T0 + timedelta(minutes=2)) == ["online"] + [None] * 7  # back after a silence
    assert im_status_pushes(database_url) == [(("mail.channel", general), marc, "online")] * 2


def test_sweep_pushes_silence_and_idleness_once(mail_app, clock, database_url):
    marc, jane = partner_id(database_url, "demo"), partner_id(database_url, "jane")
    general = channel_id(database_url, "general")
    db = mail_app.database
    presence.update(db, marc, 0, clock())
    # Jane's tab keeps polling, but nobody touched it for nearly 30 minutes.
    presence.update(db, jane, (30 * 60 - 5) * 1000, clock())
    assert presence.sweep(db, clock()) == {}
    clock.advance(seconds=10)
    assert presence.sweep(db, clock()) == {jane: "away"}
    assert presence.sweep(db, clock()) == {}
    clock.advance(seconds=40)
    assert presence.update(db, jane, (30 * 60 + 45) * 1000, clock()) is None  # still polling, still idle
    clock.advance(seconds=10)
    assert presence.sweep(db, clock()) == {marc: "offline"}  # 60 s without a poll
    assert presence.sweep(db, clock()) == {}
    clock.advance(seconds=56)
    assert presence.sweep(db, clock()) == {jane: "offline"}
    assert im_status_pushes(database_url) == [
        (("mail.channel", general), marc, "online"), (("mail.channel", general), jane, "online"),
        (("mail.channel", general), jane, "away"), (("mail.channel", general), marc, "offline"),
        (("mail.channel", general), jane, "offline"),
    ]
    # Polling again after the pushed offline is pushed as a return.
    assert presence.update(db, marc, 0, clock()) == "online"
    assert presence.sweep(db, clock()) == {}
    admin = partner_id(database_url, "admin")
    with db.transaction() as tx:
        assert presence.statuses(tx, [marc, jane, admin], clock()) == {marc: "online", jane: "offline",
                                                                       admin: "offline"}


def test_concurrent_sweeps_of_several_processes_push_once(make_mail_app, clock, database_url):
    apps = [make_mail_app(clock=clock) for _ in range(4)]
    partners = [partner_id(database_url, login_name) for login_name in ("admin", "demo", "jane", "joel")]
    for pid in partners:
        presence.update(apps[0].database, pid, 0, clock())
    clock.advance(minutes=2)
    barrier = threading.Barrier(len(apps))
    swept, errors = [], []

    def one(app):
        barrier.wait()
        try:
            swept.append(presence.sweep(app.database, clock()))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = [pid for result in swept for pid in result]
    assert sorted(claimed) == sorted(partners)
    offline = [(pid, status) for _, pid, status in im_status_pushes(database_url) if status == "offline"]
    assert sorted(offline) == sorted((pid, "offline") for pid in partners)


def test_the_app_sweeps_periodically_from_the_first_poll_until_closed(make_mail_app, serve, clock, database_url):
    app = make_mail_app(timeout=1, clock=clock, presence_sweep_interval=0.05)
    url = serve(app).url
    marc = partner_id(database_url, "demo")
    assert not app.presence_sweeper.running
    poll_as(url, login(url, "demo"), 0)
    assert app.presence_sweeper.running
    clock.advance(seconds=56)
    deadline = time.monotonic() + 10
    while (marc, "offline") not in [(pid, s) for _, pid, s in im_status_pushes(database_url)]:
        assert time.monotonic() < deadline, "no sweep pushed the silence"
        time.sleep(0.05)
    app.close()
    assert not app.presence_sweeper.running
    runs = app.presence_sweeper.runs
    time.sleep(0.2)
    assert app.presence_sweeper.runs == runs
