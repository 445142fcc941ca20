"""Every way of starting a server, started as a user starts it: the console
scripts, ``python -m``, gunicorn. Each must serve 100 parked polls without
blocking (gevent patched before anything else is imported) and stop on
SIGTERM within a few seconds, exit status 0, having answered every parked
poll; a request that comes in during the shutdown gets a JSON-RPC 503 or a
closed connection, never a plain-text error.

The servers run as children of a process that ignores SIGINT, as CI starts
``.ci/run`` in the background: SIGTERM must work regardless.
"""
import json
import os
import re
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from bus import Database, sendone
from tests.bus.test_servers import ServerProcess
from tests.support import listener_pids, wait_for
from tests.ws_client import WebSocketClient

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PARKED = 100


def commands(database_url, port):
    # One worker, unless said otherwise: the process started is the one
    # that serves, so its own patching is what is tested.
    common = ["--db-url", database_url, "--port", str(port), "--poll-timeout", "30"]
    one = [*common, "--workers", "1"]
    return {
        "imbus-bus": [str(VENV_BIN / "imbus-bus"), "serve", *one],
        "python -m bus": [sys.executable, "-m", "bus", "serve", *one],
        "python -m bus --workers 2": [sys.executable, "-m", "bus", "serve", *common, "--workers", "2"],
        "python -m bus (threaded)": [sys.executable, "-m", "bus", "serve", *common, "--server", "threaded"],
        "imbus-demo": [str(VENV_BIN / "imbus-demo"), *one],
        "python -m mail.demo": [sys.executable, "-m", "mail.demo", *one],
        "python -m mail.demo --workers 2": [sys.executable, "-m", "mail.demo", *common, "--workers", "2"],
        "python -m mail.demo (threaded)": [sys.executable, "-m", "mail.demo", *common, "--server", "threaded"],
        "gunicorn": [str(VENV_BIN / "gunicorn"), "-k", "bus.gunicorn_worker.GeventWorker", "-w", "1",
                     "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "bus.app:create_app(timeout=30)"],
    }


ENTRY_POINTS = list(commands("", 0))


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Server(ServerProcess):
    """An entry point, started with SIGINT ignored as CI starts the suite."""

    def __init__(self, entry_point, database_url, log_dir):
        super().__init__(entry_point, database_url, log_dir, preexec_fn=_ignore_sigint, start_timeout=60,
                         argv=lambda port: commands(database_url, port)[entry_point])

    def terminate(self, timeout):
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        status = super().terminate(timeout)
        return status, time.monotonic() - started


@pytest.fixture
def start(database_url, tmp_path):
    servers = []

    def start_(entry_point):
        server = Server(entry_point, database_url, tmp_path)
        servers.append(server)
        return server

    yield start_
    for server in servers:
        server.kill()


def request_bytes(path, body, *, keep_alive=True):
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n")
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def poll_body(last):
    return json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1,
                       "params": {"channels": [], "last": last, "options": {}}}).encode()


def read_answer(sock, timeout):
    """(status, headers, decoded JSON body) of one HTTP answer, or None if
    the connection closed before a whole answer came."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return status, headers, json.loads(body[:length])


class ParkedPolls:
    """Polls on raw keep-alive sockets, left waiting on the server."""

    def __init__(self, url, count, last):
        port = int(url.rsplit(":", 1)[1])
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request_bytes("/longpolling/poll", poll_body(last)))
            self.sockets.append(sock)

    def answered(self):
        """How many have an answer waiting to be read, right now."""
        selector = selectors.DefaultSelector()
        for sock in self.sockets:
            selector.register(sock, selectors.EVENT_READ)
        ready = selector.select(0)
        selector.close()
        return len(ready)

    def answers(self, timeout):
        deadline = time.monotonic() + timeout
        return [read_answer(sock, max(deadline - time.monotonic(), 0.01)) for sock in self.sockets]

    def close(self):
        for sock in self.sockets:
            sock.close()


def broadcast(database_url, payload):
    """A notification every poll hears, bus and chat alike; its id."""
    database = Database(database_url, maxconn=1)
    try:
        with database.transaction() as tx:
            sendone(tx, "broadcast", "test/wake", payload)
        with database.cursor() as cr:
            cr.execute("SELECT max(id) FROM bus_bus")
            return cr.fetchone()[0]
    finally:
        database.close()


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_serves_parked_polls_and_stops_on_sigterm(entry_point, start, database_url):
    server = start(entry_point)
    parked = ParkedPolls(server.url, PARKED, 0)
    try:
        time.sleep(0.5)
        assert parked.answered() == 0
        # With gevent patched too late, the first parked poll blocks the
        # process and nothing else is answered.
        started = time.monotonic()
        assert requests.get(server.url + "/longpolling/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
        last = broadcast(database_url, "wake up")
        woken = parked.answers(10)
        assert all(answer is not None and answer[0] == 200 for answer in woken), woken[:3]
        assert all([e["message"]["payload"] for e in answer[2]["result"]] == ["wake up"] for answer in woken)
    finally:
        parked.close()

    parked = ParkedPolls(server.url, PARKED, last)
    try:
        time.sleep(0.5)
        assert parked.answered() == 0
        status, took = server.terminate(10)
        answers = parked.answers(2)
    finally:
        parked.close()
    assert status == 0, server.log()
    assert took < 5, f"stopped in {took:.1f}s"
    assert [a[0] for a in answers if a is not None] == [200] * PARKED, server.log()
    assert all(a[2]["result"] == [] for a in answers)
    if entry_point != "gunicorn":
        # So that the client's next poll goes to a new connection. gunicorn
        # decides that itself, before the application runs.
        assert all(a[1].get("connection") == "close" for a in answers)
    assert "Traceback" not in server.log()
    wait_for(lambda: listener_pids(database_url) == [], 5, "the listener going away")


def _wait_for_log(server, pattern, count, timeout):
    wait_for(lambda: len(re.findall(pattern, server.log())) >= count, timeout, f"{pattern!r} in the server's log")


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ["python -m bus", "python -m bus (threaded)", "python -m mail.demo",
                                         "python -m mail.demo --workers 2"])
def test_requests_during_shutdown_get_a_json_503(entry_point, start):
    server = start(entry_point)
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    idle.sendall(request_bytes("/longpolling/poll", b'{"jsonrpc": "2.0", "method": "call", "params": {"channels": ['
                                                    b'], "last": 0, "options": {"peek": true}}, "id": 1}'))
    assert read_answer(idle, 10)[0] == 200  # a kept-alive connection, now idle
    # Requests still coming in hold the shutdown for its grace period: half
    # of their bodies are sent. One is finished later, one never is.
    body = poll_body(0)
    slow, stuck = (socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2))
    for sock in (slow, stuck):
        sock.sendall(request_bytes("/longpolling/poll", body)[:-len(body) // 2])
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    _wait_for_log(server, "INFO bus.server: shutting down", 2 if "--workers 2" in entry_point else 1, 5)
    try:
        idle.sendall(request_bytes("/longpolling/poll", poll_body(0)))
        answer = read_answer(idle, 5)
    except (ConnectionError, socket.timeout) as exc:  # closed under us: allowed
        answer = exc
    if not isinstance(answer, Exception) and answer is not None:
        status, headers, decoded = answer
        assert status == 503 and headers.get("connection") == "close", answer
        assert decoded["error"]["data"]["name"] and decoded["jsonrpc"] == "2.0"
    slow.sendall(body[-len(body) // 2:])
    finished = read_answer(slow, 5)
    assert finished is None or (finished[0] == 200 and finished[2]["result"] == [])
    status = server.process.wait(10)
    # Cut off when the grace period ran out: the connection closes, with no
    # plain-text error in its place.
    try:
        assert read_answer(stuck, 5) is None
    except ConnectionResetError:
        pass
    for sock in (idle, slow, stuck):
        sock.close()
    assert status == 0, server.log()
    assert "Traceback" not in server.log()


def _children(pid):
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_workers_share_the_port_and_a_dead_worker_is_replaced(start, database_url):
    server = start("python -m bus --workers 2")

    def both_workers_polled():
        # A dispatcher starts with its process's first poll, and a new
        # connection lands on either worker once both are listening.
        for _ in range(10):
            requests.post(server.url + "/longpolling/poll", json={
                "jsonrpc": "2.0", "method": "call", "id": 1,
                "params": {"channels": [], "last": 0, "options": {"peek": True}}}, timeout=5)
        return len(listener_pids(database_url)) == 2

    wait_for(both_workers_polled, 30, "both workers listening")
    # The kernel spreads the connections over both workers, and each has its
    # own dispatcher: a post reaches the polls parked in each.
    parked = ParkedPolls(server.url, 20, 0)
    try:
        time.sleep(0.5)
        broadcast(database_url, "to all")
        assert all(answer is not None and answer[0] == 200 for answer in parked.answers(10))
    finally:
        parked.close()
    victim = _children(server.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in _children(server.process.pid) and len(_children(server.process.pid)) == 2,
             15, "the dead worker being replaced")
    wait_for(both_workers_polled, 30, "the new worker listening")
    assert requests.get(server.url + "/longpolling/health", timeout=5).status_code == 200
    status, took = server.terminate(15)
    assert status == 0 and took < 5, server.log()
    assert "restarting it" in server.log()


@pytest.mark.slow
def test_workers_stop_when_their_supervisor_is_killed(start, database_url):
    server = start("python -m bus --workers 2")
    wait_for(lambda: len(_children(server.process.pid)) == 2, 10, "two workers")
    workers = _children(server.process.pid)
    server.process.kill()
    server.process.wait()

    def gone(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(lambda: all(gone(pid) for pid in workers), 10, "the orphaned workers stopping")


SOCKET_ENTRY_POINTS = ["python -m bus", "python -m bus (threaded)", "python -m mail.demo",
                       "python -m mail.demo (threaded)", "gunicorn"]


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", SOCKET_ENTRY_POINTS)
def test_serves_websockets_and_closes_them_with_1001_on_sigterm(entry_point, start, database_url):
    server = start(entry_point)
    sockets = [WebSocketClient(server.url) for _ in range(20)]
    try:
        for ws in sockets:
            ws.subscribe([], 0)
        parked = ParkedPolls(server.url, 5, 0)
        last = broadcast(database_url, "wake up")
        assert all([e["message"]["payload"] for e in ws.receive(10)] == ["wake up"] for ws in sockets)
        assert all(answer is not None and answer[0] == 200 for answer in parked.answers(10))
        parked.close()
        for ws in sockets:
            ws.subscribe([], last)
        status, took = server.terminate(10)
        codes = [ws.close_code(5)[0] for ws in sockets]
    finally:
        for ws in sockets:
            ws.close()
    assert status == 0, server.log()
    assert took < 5, f"stopped in {took:.1f}s"
    assert codes == [1001] * len(sockets)


@pytest.mark.parametrize("module", ["bus", "mail.demo"])
def test_no_websocket_makes_the_route_a_404(module, database_url, tmp_path):
    argv = [sys.executable, "-m", module, *(["serve"] if module == "bus" else []), "--db-url", database_url,
            "--workers", "1", "--no-websocket"]
    server = ServerProcess(module, database_url, tmp_path, argv=lambda port: [*argv, "--port", str(port)],
                           start_timeout=60)
    try:
        response = requests.get(server.url + "/websocket", timeout=5, headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg=="})
        assert response.status_code == 404
    finally:
        assert server.terminate(10) == 0, server.log()
