"""A server holding thousands of parked polls has socket numbers above 1023.

The pool's staleness check once used select(), which refuses those numbers:
every new connection was taken for dead and thrown away, and the bus stopped
answering under exactly the load it is built for.
"""
import resource
import socket

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
