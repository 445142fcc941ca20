"""The unchanged application under each supported server, each in a process
of its own as deployed: gevent's pywsgi and Werkzeug's threaded server
through ``python -m bus serve``, and gunicorn's gevent worker. Also two
server processes on one database, which must hear each other's
notifications through PostgreSQL."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from bus import Database, sendmany, sendone
from tests.support import ParkedPoll, create_database, drop_database, listener_pids, poll, wait_for

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(kind, database_url, port, *extra):
    if kind == "gunicorn":
        # The library's worker drains the app on SIGTERM; gunicorn's own
        # would wait --graceful-timeout for the parked polls, then cut them.
        return [str(VENV_BIN / "gunicorn"), "-k", "bus.gunicorn_worker.GeventWorker", "-w", "1",
                "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "bus.app:create_app()"]
    return [sys.executable, "-m", "bus", "serve", "--db-url", database_url, "--port", str(port),
            "--server", kind, "--poll-timeout", "20", "--workers", "1", *extra]


class ServerProcess:
    """One server process on a free port, started and stopped the way a
    process manager does (health check, then SIGTERM). ``extra`` are more
    options for ``python -m bus serve``; ``preexec_fn`` runs in the child
    before it starts (to lower its limits, say). ``argv``, a function of the
    port, replaces the command ``kind`` stands for."""

    def __init__(self, kind, database_url, log_dir, *extra, preexec_fn=None, argv=None, start_timeout=30):
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        env = {**os.environ, "DATABASE_URL": database_url}
        argv = argv(self.port) if argv is not None else command(kind, database_url, self.port, *extra)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=preexec_fn)
        self._wait_healthy(start_timeout)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def _wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"{self.kind} exited at start-up:\n{self.log()}"
            try:
                response = requests.get(self.url + "/longpolling/health", timeout=1)
                if response.status_code == 200:
                    assert response.json() == {"status": "pass"}
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{self.kind} not healthy within {timeout}s:\n{self.log()}"
            time.sleep(0.1)

    def terminate(self, timeout):
        """SIGTERM; the exit status, failing the test if it takes over ``timeout`` s."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{self.kind} still running {timeout}s after SIGTERM:\n{self.log()}")

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def server_of_its_own(server_url, log_dir, kind="gevent", args=(), preexec_fn=None):
    """A server process on a database of its own, for a module's tests to
    share (the ``database_url`` fixture is one test's)."""
    name = f"imbus_test_{uuid.uuid4().hex[:12]}"
    database_url = create_database(server_url, name)
    server = None
    try:
        server = ServerProcess(kind, database_url, log_dir, *args, preexec_fn=preexec_fn)
        server.database_url = database_url
        yield server
    finally:
        if server is not None:
            server.kill()
        drop_database(server_url, name)


@pytest.fixture
def start_server(database_url, tmp_path):
    servers = []

    def start(kind):
        server = ServerProcess(kind, database_url, tmp_path)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def writer(database_url):
    """The test's own connection pool: commits come from outside the servers,
    the way another worker's would."""
    database = Database(database_url, maxconn=2)
    yield database
    database.close()


def post(database, channel, payload):
    with database.transaction() as tx:
        sendone(tx, channel, "test", payload)


def payloads(entries):
    return [e["message"]["payload"] for e in entries]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gevent", "threaded", "gunicorn"])
def test_a_poller_far_behind_gets_every_row_whole(kind, start_server, writer):
    """Thousands of rows, read by the dispatcher in many batches: the answer
    is slices of the window's shared blocks, which gevent's handler writes
    as they are (one gathered call, partial sends resumed) and the other
    servers get joined. Every server must deliver the same exact bytes."""
    server = start_server(kind)
    post(writer, "backlog", {"n": -1})
    start = poll(server.url, ["backlog"], 0)[-1]["id"]
    sent = 0
    for batch in range(40):
        with writer.transaction() as tx:
            sendmany(tx, [("backlog", "test", {"n": sent + i, "pad": "x" * (i * 7 % 300)}) for i in range(60)])
        sent += 60
        if batch % 4 == 3:  # let the dispatcher read in several batches, so blocks merge
            wait_for(lambda: len(poll(server.url, ["backlog"], start)) == sent, 10, "the rows being read")
    everything = poll(server.url, ["backlog"], start)
    assert [p["n"] for p in payloads(everything)] == list(range(sent))
    middle = everything[1234]["id"]  # a last inside a merged block
    assert [p["n"] for p in payloads(poll(server.url, ["backlog"], middle))] == list(range(1235, sent))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gevent", "threaded", "gunicorn"])
def test_server_serves_wakes_and_stops_on_sigterm(kind, start_server, writer, database_url):
    server = start_server(kind)
    post(writer, "room", "seed")
    seed = poll(server.url, ["room"], 0)
    assert payloads(seed) == ["seed"]
    wait_for(lambda: len(listener_pids(database_url)) == 1, 5, "the server's listener connecting")

    parked = ParkedPoll(server.url, ["room"], seed[-1]["id"])
    time.sleep(0.3)
    assert not parked.done.is_set()
    post(writer, "room", "wake up")
    woken = parked.result(3.0)
    assert payloads(woken) == ["wake up"]

    parked = ParkedPoll(server.url, ["room"], woken[-1]["id"])
    # A browser also keeps an idle keep-alive connection open.
    idle = requests.Session()
    assert idle.get(server.url + "/longpolling/health", timeout=5).status_code == 200
    time.sleep(0.5)
    assert not parked.done.is_set()
    started = time.monotonic()
    status = server.terminate(8.0)
    stopped_in = time.monotonic() - started
    idle.close()
    assert status == 0, server.log()
    # gunicorn's worker looks at its connections once a second, and gives
    # the idle one its keep-alive time (2 s); ours wait only for answers.
    assert stopped_in < (5.0 if kind == "gunicorn" else 2.0)
    # Parked polls are answered before the server stops.
    assert parked.result(1.0) == []
    wait_for(lambda: listener_pids(database_url) == [], 3, "the listener going away")
    assert "Traceback" not in server.log()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gevent", "threaded"])
def test_two_server_processes_on_one_database_hear_each_other(kind, start_server, writer, database_url):
    a, b = start_server(kind), start_server("gevent")
    post(writer, "room", "seed")
    last = {}
    for server in (a, b):
        entries = poll(server.url, ["room"], 0)
        assert payloads(entries) == ["seed"]
        last[server] = entries[-1]["id"]
    wait_for(lambda: len(listener_pids(database_url)) == 2, 5, "both listeners connecting")

    received = {a: [], b: []}
    for round_ in range(3):
        parked = {server: ParkedPoll(server.url, ["room", f"only-{server.port}"], last[server]) for server in (a, b)}
        time.sleep(0.2)
        assert not any(p.done.is_set() for p in parked.values())
        # Round 0 wakes both; then one commit meant for each process alone,
        # to show a notification reaches exactly the process that waits on it.
        if round_ == 0:
            post(writer, "room", "for both")
            expected = {a: ["for both"], b: ["for both"]}
        else:
            target, other = (a, b) if round_ == 1 else (b, a)
            post(writer, f"only-{target.port}", f"for {target.port}")
            expected = {target: [f"for {target.port}"]}
        for server, answer in expected.items():
            entries = parked[server].result(3.0)
            assert payloads(entries) == answer
            received[server].extend(entries)
            last[server] = entries[-1]["id"]
        if round_:
            # The other process heard the NOTIFY too but has nothing for its poll.
            assert not parked[other].done.wait(0.3)
            post(writer, f"only-{other.port}", "release")
            entries = parked[other].result(3.0)
            assert payloads(entries) == ["release"]
            received[other].extend(entries)
            last[other] = entries[-1]["id"]

    ids_a = [e["id"] for e in received[a]]
    ids_b = [e["id"] for e in received[b]]
    assert ids_a == sorted(set(ids_a)) and ids_b == sorted(set(ids_b))
    assert set(ids_a) & set(ids_b) == {received[a][0]["id"]}
    for server in (a, b):
        assert server.terminate(8.0) == 0, server.log()
