"""A client that resets its connection in the middle of a request is worth
at most one INFO line in the server's log, never a traceback: a server
facing the internet sees it all day long. Raw sockets reset with
``SO_LINGER`` 0 against a real ``python -m bus serve`` gevent process,
whose own log (its stderr) is read."""
import socket
import struct
import time

import pytest

from bus import Database, sendone
from tests.bus.test_servers import server_of_its_own
from tests.raw_http import POLL, Connection, poll_body, post_poll, request
from tests.support import wait_for

pytestmark = pytest.mark.slow

BODY = poll_body(["room"], 0)
CHUNKED_POLL = request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Type: application/json",
                       b"Transfer-Encoding: chunked")


@pytest.fixture
def server(server_url, tmp_path):
    with server_of_its_own(server_url, tmp_path) as server:
        yield server


def reset(connection):
    """Close with a TCP reset rather than an orderly end."""
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def reset_all(server, count, start):
    """``count`` connections that each send ``start`` and, once the server
    is reading the rest, reset."""
    connections = [Connection(server.port) for _ in range(count)]
    for connection in connections:
        connection.send(start)
    time.sleep(0.5)
    for connection in connections:
        reset(connection)


def lines_since(server, logged):
    return server.log()[logged:].splitlines()


def test_50_resets_in_the_middle_of_a_chunked_body_are_50_info_lines(server):
    logged = len(server.log())
    reset_all(server, 50, CHUNKED_POLL + b"%x\r\n%s" % (len(BODY), BODY[:20]))
    wait_for(lambda: len(lines_since(server, logged)) >= 50, 10, "a line for each reset")
    time.sleep(0.5)  # anything more the resets would log
    lines = lines_since(server, logged)
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) == 50, "\n".join(lines[:60])
    assert all(" INFO " in line and "Connection reset by peer" in line for line in lines), lines[:3]


def test_resets_anywhere_else_in_a_request_are_at_most_one_info_line_each(server):
    database = Database(server.database_url, maxconn=1)
    try:
        with database.transaction() as tx:
            sendone(tx, "room", "test", "first")
        with database.cursor() as cr:
            cr.execute("SELECT max(id) FROM bus_bus")
            last = cr.fetchone()[0]
        logged = len(server.log())
        reset_all(server, 10, b"POST /longpolling/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: a")  # in the head
        reset_all(server, 10, request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Length: 500", body=b"{"))
        reset_all(server, 10, post_poll(poll_body(["room"], last)))  # parked
        with database.transaction() as tx:
            sendone(tx, "room", "test", "to nobody")  # wakes them: their answers meet the resets
        reset_all(server, 10, request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Length: 10000000",
                                      body=b"x" * 100000))  # refused with 413
        time.sleep(1.0)
        lines = lines_since(server, logged)
        assert "Traceback" not in "\n".join(lines)
        assert len(lines) <= 40, "\n".join(lines)
        assert all(" INFO " in line for line in lines), "\n".join(lines)
    finally:
        database.close()
