"""Garbage collection never deletes a committed row that a live dispatcher
has not taken as final yet: not a post held back behind a gap for longer than
the retention, not a row another process has still to read. A dispatcher
that is gone holds nothing back."""
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from bus import sendone
from bus.dispatcher import Dispatcher
from tests.support import ParkedPoll, listener_pids, poll, wait_for


def post(app, channel, payload):
    with app.database.transaction() as tx:
        sendone(tx, channel, "test", payload)


def stored(app):
    with app.database.cursor() as cr:
        cr.execute("SELECT id, message::json->>'payload' FROM bus_bus ORDER BY id")
        return cr.fetchall()


def age_rows(app, above):
    """Make the rows after ``above`` an hour old, as if the retention had passed."""
    with app.database.cursor() as cr:
        cr.execute("UPDATE bus_bus SET create_date = create_date - interval '1 hour' WHERE id > %s", (above,))


def drawn(app):
    """The newest bus id handed out, committed or not (sequences are not transactional)."""
    with app.database.cursor() as cr:
        cr.execute("SELECT last_value FROM bus_bus_id_seq WHERE is_called")
        row = cr.fetchone()
        return row[0] if row else 0


class GapHolder:
    """A bus writer that has drawn its id and does not commit until released:
    its COMMIT waits on an advisory lock the test holds, right after the
    bus INSERT, where a real writer's window between drawing and committing is."""

    def __init__(self, app, channel, payload):
        self._gate = app.database.connect(autocommit=True)
        self._gate.cursor().execute("SELECT pg_advisory_lock(4242)")
        before = drawn(app)

        def write():
            with app.database.transaction() as tx:
                sendone(tx, channel, "test", payload)
                tx.on_precommit(lambda: tx.execute_at_commit("SELECT pg_advisory_xact_lock(4242)"))

        self._thread = threading.Thread(target=write, daemon=True)
        self._thread.start()
        wait_for(lambda: drawn(app) > before, 5, "the writer drawing its bus id")

    def release(self):
        self._gate.close()
        self._thread.join(5)


def test_a_post_held_behind_a_gap_longer_than_the_retention_is_delivered(make_app, serve):
    app = make_app(timeout=15, retention=0.5, gc_interval=0.1)
    http = serve(app)
    post(app, "room", "seed")
    last = poll(http.url, ["room"], 0)[-1]["id"]
    holder = GapHolder(app, "room", "the gap")
    try:
        post(app, "room", "behind the gap")
        parked = ParkedPoll(http.url, ["room"], last)
        wait_for(lambda: app.dispatcher.waiter_count == 1, 5, "the poll parking")
        # Garbage collection runs every 0.1 s meanwhile: the seed, which
        # every dispatcher has passed, goes once it is older than 0.5 s.
        wait_for(lambda: "seed" not in [p for _, p in stored(app)], 5, "the seed being collected")
        time.sleep(1.0)  # the post behind the gap is now twice the retention old
        assert not parked.done.is_set(), "delivered while the gap was open"
        assert [p for _, p in stored(app)] == ["behind the gap"]
    finally:
        holder.release()
    assert [e["message"]["payload"] for e in parked.result(5)] == ["the gap", "behind the gap"]


class LaggingDispatcher(Dispatcher):
    """A dispatcher that reads only while allowed: another process whose
    reader is behind this one's (slow, or busy elsewhere)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.may_read = threading.Event()
        self.may_read.set()

    def _refresh(self, cr, *args, **kwargs):
        self.may_read.wait()
        return super()._refresh(cr, *args, **kwargs)


def test_rows_another_live_dispatcher_has_not_read_are_kept_until_it_is_gone(make_app):
    app = make_app(timeout=5, retention=30, gc_interval=0.1)
    channels = {f'["{app.database.dbname}","room"]'}
    post(app, "room", "seed")
    seed = stored(app)[-1][0]
    lagging = LaggingDispatcher(app.database, retention=30, gc_interval=600)
    try:
        lagging.start()
        wait_for(lambda: lagging.position == seed, 5, "the lagging dispatcher reading the seed")
        lagging.may_read.clear()
        app.dispatcher.start()
        post(app, "room", "unread by the lagging one")
        newest = stored(app)[-1][0]
        wait_for(lambda: app.dispatcher.position == newest, 5, "the first dispatcher reading the row")
        age_rows(app, 0)
        wait_for(lambda: stored(app)[0][0] > seed, 5, "the seed, read by both, being collected")
        time.sleep(0.5)  # five more collections
        assert [p for _, p in stored(app)] == ["unread by the lagging one"]
        lagging.may_read.set()
        answer = lagging.poll(channels, seed, timeout=5)
        assert [b'"unread by the lagging one"' in entry for entry in answer] == [True]
    finally:
        lagging.may_read.set()
        lagging.stop()
    # The lagging dispatcher is gone: nothing holds the row any more, and
    # its entry among the readers goes too.
    wait_for(lambda: stored(app) == [], 5, "the old row being collected once nobody needs it")
    with app.database.cursor() as cr:
        cr.execute("SELECT count(*) FROM bus_reader")
        assert cr.fetchone()[0] == 1


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_killed_server_process_does_not_hold_garbage_collection_back(make_app, database_url):
    app = make_app(timeout=5, retention=30, gc_interval=0.1)
    app.dispatcher.start()
    wait_for(lambda: len(listener_pids(database_url)) == 1, 5, "the app's listener connecting")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--db-url", database_url, "--port", str(port),
                               "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 30, "the server answering")
        poll(url, ["room"], 0, peek=True)  # its dispatcher starts with its first poll
        wait_for(lambda: len(listener_pids(database_url)) == 2, 5, "the server's listener connecting")
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    wait_for(lambda: len(listener_pids(database_url)) == 1, 5, "the killed server's backend ending")
    # Written after the kill: above the position the dead process had reached.
    post(app, "room", "after the kill")
    newest = stored(app)[-1][0]
    wait_for(lambda: app.dispatcher.position == newest, 5, "the app reading the row")
    age_rows(app, 0)
    wait_for(lambda: stored(app) == [], 5, "the old row being collected")


def answers(url):
    try:
        return requests.get(url + "/longpolling/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
