"""Presence: polls keep a partner online; silence makes them offline after
55 s, inactivity away after 30 min. The clock is injected, nothing sleeps."""
import threading
from datetime import datetime, timedelta

import pytest

from mail import presence
from tests.mail.support import (bus_notifications, call, channel_id, error_name, login, ok, partner_id, poll_as,
                                query)

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
    clock.advance(seconds=3)
    poll_as(timed, demo, 0)
    assert query(database_url, "SELECT last_poll FROM bus_presence WHERE partner_id = %s", (marc,)) == [
        (T0 + timedelta(seconds=6),)]
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
        assert error_name(call(timed, "/longpolling/im_status", bad, admin)) == "invalid_params"


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
