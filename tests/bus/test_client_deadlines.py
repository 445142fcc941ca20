"""Deadlines for slow and idle clients, over raw sockets against a real
``python -m bus serve`` gevent process with short deadlines: a head sent a
byte at a time, a body sent too slowly and a kept-alive connection left idle
are each closed once their time is up, and never before; a parked poll has
no deadline while it is parked, however long it waits, and its connection
is held to the idle deadline again once it has answered. Near the limit of
open files, idle connections time out and make room for newcomers."""
import os
import resource
import selectors
import time

import pytest

from bus import Database, sendone
from tests.bus.test_servers import server_of_its_own
from tests.raw_http import POLL, Connection, health, poll_body, post_poll, request

pytestmark = pytest.mark.slow

IDLE, HEAD, BODY, POLL_TIMEOUT = 1.0, 1.5, 2.0, 4.0
#: How much later than its deadline a connection may be closed (the clock
#: looks every tenth of the shortest timeout; the machine may be busy).
LATE = 8.0
#: A deadline is never cut short; this much is allowed for the clocks of two
#: processes read at slightly different moments.
EARLY = 0.05


@pytest.fixture(scope="module")
def server(server_url, tmp_path_factory):
    args = ["--idle-timeout", str(IDLE), "--head-timeout", str(HEAD), "--body-timeout", str(BODY),
            "--poll-timeout", str(POLL_TIMEOUT)]
    with server_of_its_own(server_url, tmp_path_factory.mktemp("deadlines"), args=args) as server:
        yield server


@pytest.fixture
def log(server):
    """What the server logs during the test."""
    logged = len(server.log())
    yield lambda: server.log()[logged:]
    assert "Traceback" not in server.log()[logged:]


def cpu_seconds(pid):
    """User and system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def opened(count, port, first):
    """``count`` connections, each sending ``first`` as soon as it is open
    (so that none waits for a request longer than the idle deadline)."""
    connections = []
    for _ in range(count):
        connections.append(Connection(port))
        connections[-1].send(first)
    return connections


def trickle(connections, data, interval, timeout):
    """Send ``data`` a byte every ``interval`` seconds on every connection
    until the server ends each of them, or ``timeout`` seconds pass. Returns
    ``time.monotonic()`` of each connection's end (None if still open)."""
    ended = {connection: None for connection in connections}
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        deadline = time.monotonic() + timeout
        for byte in data:
            for connection in [c for c, at in ended.items() if at is None]:
                try:
                    connection.send(bytes([byte]))
                except OSError:  # reset after the server closed
                    ended[connection] = time.monotonic()
                    selector.unregister(connection.sock)
            pause = time.monotonic() + interval
            while (left := pause - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    if not key.data.receive():
                        ended[key.data] = time.monotonic()
                        selector.unregister(key.fileobj)
            if all(ended.values()) or time.monotonic() > deadline:
                break
    return ended


def test_500_slowloris_heads_are_dropped_at_the_head_deadline(server, log):
    never_ending = b"POST /longpolling/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10000
    started = time.monotonic()  # no byte of any head was sent before
    connections = opened(500, server.port, never_ending[:1])
    try:
        # A byte every 0.1 s: far more often than any per-read timeout.
        ended = trickle(connections, never_ending[1:], 0.1, HEAD + LATE)
        still_open = [c for c, at in ended.items() if at is None]
        assert not still_open, f"{len(still_open)} of 500 slow heads still open after {HEAD + LATE} s"
        assert min(ended.values()) - started >= HEAD - EARLY
        assert log().count("no complete request head within 1.5 s") == 500
    finally:
        for connection in connections:
            connection.close()


def test_idle_kept_alive_connections_are_closed_at_the_idle_deadline(server, log):
    sent = time.monotonic()  # the idle deadlines start later, once answered
    connections = opened(300, server.port, health(b"Host: 127.0.0.1"))
    try:
        answered = {}
        for connection in connections:
            assert connection.read_answer().status == 200
            answered[connection] = time.monotonic()
        for connection in connections:
            at = connection.wait_ended(answered[connection] + IDLE + LATE - time.monotonic())
            assert at is not None, "an idle connection stayed open"
            assert at - sent >= IDLE - EARLY
        assert log() == "", "closing an idle connection is routine, not worth a line"
    finally:
        for connection in connections:
            connection.close()


def test_a_body_sent_too_slowly_is_dropped_at_the_body_deadline(server, log):
    head_sent = time.monotonic()
    connections = opened(5, server.port, request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Type: application/json",
                                                 b"Content-Length: 1000"))
    try:
        ended = trickle(connections, b" " * 1000, 0.1, BODY + LATE)
        assert all(ended.values()), "a slow body is still being waited for"
        assert min(ended.values()) - head_sent >= BODY - EARLY
        for connection in connections:
            answer = connection.read_answer()  # what the server said before it closed
            assert answer is None or answer.status == 400, answer
        assert log().count("no complete request body within 2 s") == 5
    finally:
        for connection in connections:
            connection.close()


def test_a_parked_poll_outlives_every_deadline_then_is_held_to_the_idle_one(server, log):
    database = Database(server.database_url, maxconn=1)
    try:
        with database.transaction() as tx:
            sendone(tx, "wake", "test", "before")
        with database.cursor() as cr:
            cr.execute("SELECT max(id) FROM bus_bus")
            last = cr.fetchone()[0]
        sent = time.monotonic()
        woken = opened(10, server.port, post_poll(poll_body(["wake"], last)))
        timed_out = opened(10, server.port, post_poll(poll_body(["quiet"], last)))
        # Longer than the idle, head and body deadlines: parked, no deadline.
        time.sleep(max(IDLE, HEAD, BODY) + 0.5)
        assert not any(c.ended() for c in woken + timed_out), "a parked poll was cut off"
        posted = time.monotonic()  # the woken polls answer, then idle, after it
        with database.transaction() as tx:
            sendone(tx, "wake", "test", "now")
        answers = {}
        for connection in woken + timed_out:
            answer = connection.read_answer()
            assert answer is not None and answer.status == 200, answer
            answers[connection] = (answer, time.monotonic())
        assert all(b'"now"' in answers[c][0].body for c in woken)
        assert all(answers[c][0].body.endswith(b'"result":[]}') for c in timed_out)
        # The poll timeout's answer came after the whole poll timeout.
        assert min(answers[c][1] for c in timed_out) - sent >= POLL_TIMEOUT - EARLY
        for connection in woken + timed_out:
            at = connection.wait_ended(answers[connection][1] + IDLE + LATE - time.monotonic())
            assert at is not None, "the connection stayed open after its poll answered"
            idle_from = posted if connection in woken else sent + POLL_TIMEOUT
            assert at - idle_from >= IDLE - EARLY
            connection.close()
    finally:
        database.close()


def test_idle_clients_at_the_open_files_limit_make_room_for_a_newcomer(server_url, tmp_path):
    def few_open_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with server_of_its_own(server_url, tmp_path, args=["--idle-timeout", str(IDLE)],
                           preexec_fn=few_open_files) as server:
        # More than the server can hold: the rest wait in its listen queue.
        idle = [Connection(server.port) for _ in range(200)]
        try:
            time.sleep(0.5)  # the server takes what it can, up to its limit
            cpu, started = cpu_seconds(server.process.pid), time.monotonic()
            newcomer = Connection(server.port, timeout=IDLE + LATE)
            newcomer.send(health(b"Host: 127.0.0.1"))
            answer = newcomer.read_answer()
            assert answer is not None and answer.status == 200
            waited = time.monotonic() - started
            # Out of files, the accept loop backs off instead of spinning.
            assert cpu_seconds(server.process.pid) - cpu < 0.5 * waited + 0.2
            newcomer.close()
        finally:
            for connection in idle:
                connection.close()
