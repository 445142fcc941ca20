"""A server holding thousands of parked polls has socket numbers above 1023.

The pool's staleness check once used select(), which refuses those numbers:
every new connection was taken for dead and thrown away, and the bus stopped
answering under exactly the load it is built for.
"""
import resource
import socket
import time

from bus import sendone
from tests.support import poll


def test_the_bus_works_when_its_connections_get_socket_numbers_above_1023(make_app, serve):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 1200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    held = [socket.socket() for _ in range(1100)]  # the parked clients' sockets, as it were
    try:
        app = make_app()
        http = serve(app)
        for n in range(3):
            with app.database.transaction() as tx:
                sendone(tx, "crowd", "t", {"n": n})
        with app.database.cursor() as cr:
            cr.execute("SELECT min(id) FROM bus_bus")
            first = cr.fetchone()[0]
            assert cr.connection.fileno() > 1023
        answer = poll(http.url, ["crowd"], first)
        assert [n["message"]["payload"]["n"] for n in answer] == [1, 2]
    finally:
        for sock in held:
            sock.close()


def test_the_listener_wakes_polls_when_its_socket_number_is_above_1023(make_app, serve):
    """The listener's own socket is checked too: select() on it failed, and the
    dispatcher restarted in a loop instead of listening."""
    from tests.support import ParkedPoll, wait_for

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1200, hard), hard))
    held = [socket.socket() for _ in range(1100)]
    try:
        app = make_app()
        http = serve(app)
        with app.database.transaction() as tx:
            sendone(tx, "crowd", "t", {"n": 0})
        assert poll(http.url, ["crowd"], 0)  # starts the dispatcher, now above 1023
        time.sleep(0.2)
        reads = app.dispatcher.reads
        time.sleep(0.5)
        assert app.dispatcher.reads == reads, "the dispatcher restarts in a loop instead of listening"
        last = app.dispatcher.position
        parked = ParkedPoll(http.url, ["crowd"], last)
        wait_for(lambda: app.dispatcher.waiter_count == 1, 5, "the poll parking")
        with app.database.transaction() as tx:
            sendone(tx, "crowd", "t", {"n": 1})
        assert [n["message"]["payload"]["n"] for n in parked.result(2)] == [1]
        assert app.dispatcher.reads - reads == 1, "the dispatcher restarted instead of listening"
    finally:
        for sock in held:
            sock.close()
