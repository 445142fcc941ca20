"""/longpolling/poll over real HTTP: what a client following ``last`` gets."""
import json
import threading
import time

from bus import sendone
from bus.channels import array_parts
from bus.dispatcher import Dispatcher
from bus.hub import Hub
from tests.support import INVALID_PARAMS, ParkedPoll, odoo_error, poll, post, rpc, wait_for, wait_parked


def ids_of(app):
    with app.database.cursor() as cr:
        cr.execute("SELECT id FROM bus_bus ORDER BY id")
        return [r[0] for r in cr.fetchall()]



def test_health_needs_no_session_and_is_never_cached(http):
    """A cached "pass" would tell a load balancer a dead server is up: Odoo
    sends ``Cache-Control: no-store`` for it."""
    import requests

    response = requests.get(http.url + "/longpolling/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "pass"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


def test_first_poll_gets_only_what_is_younger_than_the_timeout(app, http):
    post(app, "general", {"n": "old"})
    post(app, "general", {"n": "new"})
    with app.database.cursor() as cr:
        cr.execute("UPDATE bus_bus SET create_date = create_date - interval '1 hour' WHERE id = (SELECT min(id) FROM bus_bus)")
    answer = poll(http.url, ["general"], 0)
    assert [n["message"]["payload"] for n in answer] == [{"n": "new"}]


def test_poll_returns_rows_after_last_on_its_channels_in_order(app, http):
    post(app, "general", {"n": 1})
    post(app, "elsewhere", {"n": 2})
    post(app, "general", {"n": 3})
    post(app, "broadcast", {"n": 4})
    first = ids_of(app)[0]
    answer = poll(http.url, ["general"], first - 1)
    assert [n["message"] for n in answer] == [
        {"type": "test", "payload": {"n": 1}},
        {"type": "test", "payload": {"n": 3}},
        {"type": "test", "payload": {"n": 4}},
    ]
    assert [n["id"] for n in answer] == sorted(n["id"] for n in answer)
    assert poll(http.url, ["general"], answer[-1]["id"], peek=True) == []


def test_parked_poll_is_woken_by_a_post(app, http):
    post(app, "general", {"n": 0})
    last = ids_of(app)[-1]
    waiting = ParkedPoll(http.url, ["general"], last)
    wait_parked(app)
    time.sleep(0.1)
    assert not waiting.done.is_set(), "answered before anything was posted"
    post(app, "general", {"n": 1})
    answer = waiting.result(2)
    assert [n["message"]["payload"] for n in answer] == [{"n": 1}]


def test_a_post_on_another_channel_does_not_answer_the_poll(make_app, serve):
    app = make_app(timeout=1.0)
    http = serve(app)
    post(app, "general", {"n": 0})
    last = ids_of(app)[-1]
    started = time.monotonic()
    waiting = ParkedPoll(http.url, ["general"], last)
    wait_parked(app)
    post(app, "other", {"n": 1})
    assert waiting.result(5) == []
    assert time.monotonic() - started >= 0.9


def test_parked_poll_answers_empty_at_the_timeout(make_app, serve):
    app = make_app(timeout=0.5)
    http = serve(app)
    started = time.monotonic()
    assert poll(http.url, ["general"], 10) == []
    assert 0.4 < time.monotonic() - started < 3


def test_peek_answers_at_once(app, http):
    started = time.monotonic()
    assert poll(http.url, ["general"], 10, peek=True) == []
    assert time.monotonic() - started < 1


def test_broadcast_reaches_every_poller(app, http):
    post(app, "general", {"n": 0})
    last = ids_of(app)[-1]
    waiting = [ParkedPoll(http.url, [name], last) for name in ("a", "b", "c")]
    wait_parked(app, 3)
    post(app, "broadcast", {"hello": "all"})
    for w in waiting:
        assert [n["message"]["payload"] for n in w.result(5)] == [{"hello": "all"}]


def test_a_client_cannot_listen_to_a_record_channel(app, http):
    post(app, ("res.partner", 3), {"secret": True})
    post(app, "general", {"n": 1})
    first = ids_of(app)[0]
    names = ["res.partner", f'["{app.database.dbname}","res.partner",3]', "general"]
    answer = poll(http.url, names, first - 1)
    assert [n["message"]["payload"] for n in answer] == [{"n": 1}]
    refused = rpc(http.url, "/longpolling/poll", {"channels": [["res.partner", 3]], "last": 0})
    odoo_error(refused.status_code, refused.json(), INVALID_PARAMS)


class RaceDispatcher(Dispatcher):
    """Commits a row right after the catch-up read and waits until the
    dispatcher has processed it, before the poll goes on to park: the window
    in which Odoo 15 registers its waiter too late."""

    def __init__(self, *args, on_gap, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_gap = on_gap
        self.injected = False

    def _collect(self, channels, last, audience):
        entries = super()._collect(channels, last, audience)
        if not self.injected:
            self.injected = True
            self.on_gap()
        return entries


def test_a_row_committed_between_catch_up_and_parking_is_not_missed(app):
    post(app, "general", {"n": 0})
    last = ids_of(app)[-1]
    app.dispatcher.stop()

    def commit_and_wait():
        post(app, "general", {"n": "in the window"})
        target = ids_of(app)[-1]
        wait_for(lambda: dispatcher.position >= target, 5, "the dispatcher reading the row")

    dispatcher = RaceDispatcher(app.database, on_gap=commit_and_wait)
    try:
        started = time.monotonic()
        answer = dispatcher.poll({f'["{app.database.dbname}","general"]'}, last, timeout=5)
        assert b'"in the window"' in answer[0]
        assert time.monotonic() - started < 2
    finally:
        dispatcher.stop()


def test_notifications_of_one_wake_up_cost_one_read_whatever_the_number_of_pollers(make_app, serve):
    costs = {}
    for pollers in (1, 40):
        app = make_app(timeout=10)
        http = serve(app)
        post(app, "general", {"n": 0})
        last = ids_of(app)[-1]
        waiting = [ParkedPoll(http.url, ["general"], last) for _ in range(pollers)]
        wait_parked(app, pollers)
        time.sleep(0.2)
        before_reads, before_statements = app.dispatcher.reads, app.database.statements.value
        with app.database.transaction() as tx:
            sendone(tx, "general", "test", {"n": 1})
        for w in waiting:
            assert len(w.result(10)) == 1
        costs[pollers] = (app.dispatcher.reads - before_reads,
                          app.database.statements.value - before_statements)
    # The post itself: its INSERT, COMMIT is not a statement, its NOTIFY. Then
    # one shared read per process, however many pollers wake.
    assert costs[1][0] == costs[40][0] == 1
    assert costs[1][1] == costs[40][1]


def test_odoo_mode_costs_one_query_per_woken_poller(make_app, serve):
    """The contrast that the previous test is about."""
    app = make_app(timeout=10, shared_reads=False, hold_back_gaps=False)
    http = serve(app)
    post(app, "general", {"n": 0})
    last = ids_of(app)[-1]
    waiting = [ParkedPoll(http.url, ["general"], last) for _ in range(20)]
    wait_parked(app, 20)
    before = app.database.statements.value
    post(app, "general", {"n": 1})
    for w in waiting:
        assert len(w.result(10)) == 1
    assert app.database.statements.value - before >= 20


def test_garbage_collection_and_the_outdated_signal(make_app, serve):
    app = make_app(timeout=1.0, retention=30, gc_interval=0.1)
    http = serve(app)
    for n in range(3):
        post(app, "general", {"n": n})
    old = ids_of(app)
    with app.database.cursor() as cr:
        cr.execute("UPDATE bus_bus SET create_date = create_date - interval '1 hour' WHERE id <= %s", (old[1],))
    post(app, "general", {"n": 3})
    app.dispatcher.start()
    wait_for(lambda: ids_of(app)[0] == old[2], 5, "garbage collection of the old rows")
    post(app, "general", {"n": 4})
    newest = ids_of(app)[-1]
    wait_for(lambda: app.dispatcher.gc_floor >= old[1] and app.dispatcher.position >= newest, 5,
             "the dispatcher reading the new floor and rows")
    answer = poll(http.url, ["general"], old[0])
    assert answer[0]["message"]["type"] == "bus/outdated"
    assert answer[0]["id"] == old[1]
    assert [n["message"]["payload"]["n"] for n in answer[1:]] == [2, 3, 4]
    # A client that is up to date hears nothing about it.
    current = poll(http.url, ["general"], old[2])
    assert [n["message"]["payload"]["n"] for n in current] == [3, 4]


def test_answers_are_whole_and_in_order_across_channels_and_cache_trims(app):
    """Each channel keeps its own log of recent rows and old rows are
    trimmed: whatever ``last`` a poller comes back with, on one channel or
    several, it gets exactly the rows after it, from memory or from the
    database."""
    app.dispatcher.stop()
    dispatcher = Dispatcher(app.database, cache_size=5)
    dispatcher.window.block_max = 300  # blocks merge and fill up within a few rows
    dbname = app.database.dbname
    try:
        dispatcher.start()
        post(app, "a", {"n": -1})
        wait_for(lambda: dispatcher.position == ids_of(app)[-1], 5, "the dispatcher reading the first row")
        pattern = ["a", "b", "a", "c", "c", "b", "a", "a", "c", "b", "b", "a"]
        for n in range(23):
            post(app, pattern[n % len(pattern)], {"n": n})
            if n % 4 == 3:  # several reads, so the logs are trimmed more than once
                wait_for(lambda: dispatcher.position == ids_of(app)[-1], 5, "the dispatcher catching up")
        wait_for(lambda: dispatcher.position == ids_of(app)[-1], 5, "the dispatcher catching up")
        assert dispatcher.window.floor > ids_of(app)[0], "the logs were never trimmed"
        with app.database.cursor() as cr:
            cr.execute("SELECT id, channel FROM bus_bus ORDER BY id")
            stored = cr.fetchall()
        for names in (["a"], ["b", "c"], ["a", "b", "c"]):
            channels = {f'["{dbname}","{name}"]' for name in names}
            for last in range(stored[0][0], stored[-1][0] + 1):
                answer = dispatcher.poll(channels, last, timeout=0, peek=True)
                expected = [row_id for row_id, channel in stored if row_id > last and channel in channels]
                assert [json.loads(entry)["id"] for entry in answer] == expected, (names, last)
                array = b"".join(array_parts(answer))  # what goes on the wire
                assert [entry["id"] for entry in json.loads(array)] == expected, (names, last)
    finally:
        dispatcher.stop()


def test_polls_of_one_audience_time_out_each_at_its_own_deadline(app):
    """Parked polls share wake-up events and a clock instead of a timer
    each: every poll still ends at its own timeout, neither before it nor
    when the slowest of its audience does."""
    post(app, "quiet", {"n": 0})
    last = ids_of(app)[-1]
    channels = {f'["{app.database.dbname}","quiet"]'}
    timeouts = [0.2, 0.6, 1.4]
    elapsed = {}

    def wait(timeout):
        started = time.monotonic()
        assert app.dispatcher.poll(channels, last, timeout) == []
        elapsed[timeout] = time.monotonic() - started

    threads = [threading.Thread(target=wait, args=(t,)) for t in timeouts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    for timeout in timeouts:
        assert timeout <= elapsed[timeout] < timeout + 0.35, elapsed


def test_a_wake_up_does_not_reset_the_timeouts_of_an_audience(app, http):
    """A poll woken for a row it already had (its ``last`` is past it) goes
    back to waiting until its own deadline, not a fresh timeout."""
    post(app, "room", {"n": 0})
    ahead = ids_of(app)[-1] + 1  # one past the newest row: the next row is not news to it
    channels = {f'["{app.database.dbname}","room"]'}
    started = time.monotonic()
    waiting = threading.Thread(target=lambda: app.dispatcher.poll(channels, ahead, 0.8))
    waiting.start()
    wait_parked(app)
    time.sleep(0.4)
    post(app, "room", {"n": 1})  # wakes the audience; id == ahead, so the poll waits on
    waiting.join(5)
    assert 0.8 <= time.monotonic() - started < 1.15


class PacingDispatcher(Dispatcher):
    """Reads slowly, so notifications pile up as under a real flood, and
    records whether it listens after each read. Just before it goes back
    to listening it commits one more row: announced to nobody, since the
    dispatcher is not listening yet, so only its read after LISTEN finds it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.modes = []
        self.slow = True
        self.sneaked = None

    def _refresh(self, cr, *args, **kwargs):
        if self.slow:
            time.sleep(0.03)
        return super()._refresh(cr, *args, **kwargs)

    def _pace(self, cr, announced, rows):
        if not self.listening and rows < 4 and self.sneaked is None:
            with self.database.transaction() as tx:
                sendone(tx, "flood", "test", {"n": "between the last timed read and LISTEN"})
            self.sneaked = True
        super()._pace(cr, announced, rows)
        self.modes.append(self.listening)


def test_under_a_flood_of_commits_reads_on_a_timer_and_then_listens_again(app):
    """When a read answers many notifications at once, the dispatcher stops
    listening and reads on a short timer, so PostgreSQL no longer wakes its
    backend for every commit. Every row still reaches a poller exactly once
    and in order, one committed while it switched back included, and once
    the flood is over it listens again."""
    app.dispatcher.stop()
    dispatcher = PacingDispatcher(app.database, gc_interval=600)  # no safety-net read in the test
    channels = {f'["{app.database.dbname}","flood"]'}
    post(app, "flood", {"n": "start"})
    start = ids_of(app)[-1]
    received = []

    def write(writer):
        for n in range(60):
            post(app, "flood", {"writer": writer, "n": n})

    try:
        dispatcher.start()
        dispatcher.poll(channels, start, timeout=0, peek=True)  # connected and listening
        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(60)
        dispatcher.slow = False
        wait_for(lambda: dispatcher.sneaked, 10, "the dispatcher going back to listening")
        last = start
        while len(received) < len(ids_of(app)) - 1:
            answer = dispatcher.poll(channels, last, timeout=2)
            assert answer, f"rows missing after {last}: {len(received)} of {len(ids_of(app)) - 1}"
            received.extend(json.loads(entry)["id"] for entry in answer)
            last = received[-1]
        assert received == [i for i in ids_of(app) if i > start], "a row was lost, repeated or reordered"
        assert False in dispatcher.modes, "the dispatcher never read on a timer"
        assert dispatcher.listening
    finally:
        dispatcher.stop()


class CountingHub(Hub):
    joins = 0

    def join(self, channels):
        self.joins += 1
        return super().join(channels)


class CountingDispatcher(Dispatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub = CountingHub()
        self.fetches = 0

    def _fetch(self, channels, last):
        self.fetches += 1
        return super()._fetch(channels, last)


def test_a_poll_with_news_in_memory_answers_without_parking(app):
    """Under load most polls come back behind the position with news
    waiting: they answer from the window without joining an audience. One
    further behind than the window reads the database once."""
    app.dispatcher.stop()
    dispatcher = CountingDispatcher(app.database, cache_size=3)
    channels = {f'["{app.database.dbname}","news"]'}
    try:
        dispatcher.start()
        for n in range(8):
            post(app, "news", {"n": n})
        ids = ids_of(app)
        wait_for(lambda: dispatcher.position == ids[-1], 5, "the dispatcher reading the rows")
        assert dispatcher.window.floor > ids[0]
        joins = dispatcher.hub.joins
        answer = dispatcher.poll(channels, ids[-2], timeout=5)
        assert [json.loads(entry)["id"] for entry in answer] == ids[-1:]
        assert (dispatcher.hub.joins, dispatcher.fetches) == (joins, 0)
        answer = dispatcher.poll(channels, ids[0], timeout=5)  # behind the window
        assert [json.loads(entry)["id"] for entry in answer] == ids[1:]
        assert dispatcher.fetches == 1
        quiet = {f'["{app.database.dbname}","quiet"]'}
        assert dispatcher.poll(quiet, ids[0], timeout=0, peek=True) == []
        assert dispatcher.fetches == 2, "a poll behind the window with no news read the database twice"
    finally:
        dispatcher.stop()
