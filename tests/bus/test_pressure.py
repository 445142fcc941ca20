"""Under database pressure the bus answers cleanly and keeps serving.

A statement cut by ``statement_timeout`` or ``lock_timeout`` (set in the
database URL, here while another session holds the bus table locked) is the
database being too busy, not the caller's mistake: HTTP 503 with the
retryable JSON-RPC error of "database unavailable". A server that finds
PostgreSQL full ("too many clients") or not up yet when it starts waits for
it, with back-off, up to its start-up deadline, instead of exiting.
"""
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import requests

from bus import DatabaseUnavailable, create_app, sendone
from tests.support import Crowd, ParkedPoll, build_in_background, poll, rpc, start_up_retries, wait_for

REPO = Path(__file__).resolve().parents[2]
MODE = os.environ.get("IMBUS_TEST_MODE", "threaded")


def with_options(url, options):
    return psycopg2.extensions.make_dsn(url, options=options)


def add_post_route(app):
    @app.json_route("/test/post")
    def post_route(request, params):
        with app.database.transaction() as tx:
            sendone(tx, "room", "test", params["payload"])
        return True


def assert_retryable(response):
    assert response.status_code == 503, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert error["code"] == -32001 and error["data"]["name"] == "service_unavailable", error


@pytest.mark.parametrize("setting", ["statement_timeout", "lock_timeout"])
def test_a_locked_bus_table_answers_503_and_the_server_goes_on(database_url, serve, setting):
    app = create_app(with_options(database_url, f"-c {setting}=300"), timeout=5)
    try:
        add_post_route(app)
        http = serve(app)
        assert rpc(http.url, "/test/post", {"payload": "before"}).json()["result"] is True
        last = poll(http.url, ["room"], 0)[-1]["id"]
        locker = psycopg2.connect(database_url)
        try:
            locker.cursor().execute("LOCK TABLE bus_bus IN ACCESS EXCLUSIVE MODE")
            for call in (lambda: rpc(http.url, "/test/post", {"payload": "while locked"}),
                         lambda: rpc(http.url, "/longpolling/poll", {"channels": ["room"], "last": 0})):
                started = time.monotonic()
                assert_retryable(call())
                assert time.monotonic() - started < 3
        finally:
            locker.rollback()
            locker.close()
        parked = ParkedPoll(http.url, ["room"], last)
        assert rpc(http.url, "/test/post", {"payload": "after"}).json()["result"] is True
        assert [e["message"]["payload"] for e in parked.result(5)] == ["after"]
    finally:
        app.close()


def test_an_app_starting_on_a_full_server_waits_for_a_connection(small_database, serve, caplog):
    caplog.set_level(logging.WARNING, logger="bus.database")
    crowd = Crowd(small_database)
    try:
        thread, built, failed = build_in_background(lambda: create_app(small_database, timeout=5))
        wait_for(lambda: len(start_up_retries(caplog)) >= 3 or failed, 10, "three retries")
        assert not failed, f"the app gave up at once: {failed[0]!r}"
        assert all("too many clients" in r.getMessage() and not r.exc_info for r in start_up_retries(caplog))
    finally:
        crowd.leave()
    thread.join(10)
    assert built, failed
    app = built[0]
    try:
        add_post_route(app)
        http = serve(app)
        assert rpc(http.url, "/test/post", {"payload": "up"}).json()["result"] is True
        assert [e["message"]["payload"] for e in poll(http.url, ["room"], 0)] == ["up"]
    finally:
        app.close()


def test_the_start_up_deadline_bounds_the_wait(small_database, caplog):
    caplog.set_level(logging.WARNING, logger="bus.database")
    crowd = Crowd(small_database)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="too many clients"):
            create_app(small_database, startup_timeout=1.0)
        assert 1.0 <= time.monotonic() - started < 4
        assert start_up_retries(caplog)
    finally:
        crowd.leave()


def test_an_app_started_before_its_database_waits_for_it(small_cluster, small_database, caplog):
    caplog.set_level(logging.WARNING, logger="bus.database")
    small_cluster.stop()
    try:
        thread, built, failed = build_in_background(lambda: create_app(small_database, timeout=5))
        wait_for(lambda: len(start_up_retries(caplog)) >= 2 or failed, 10, "two retries")
        assert not failed, f"the app gave up at once: {failed[0]!r}"
    finally:
        small_cluster.start()
    thread.join(10)
    assert built, failed
    built[0].close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_server_restarted_on_a_full_database_serves_once_there_is_room(small_database, tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    crowd = Crowd(small_database)
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--db-url", small_database,
                                   "--port", str(port), "--server", MODE],
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: log_path.read_text().count("retrying") >= 3 or server.poll() is not None, 20,
                     "three retries")
            assert server.poll() is None, f"the server exited:\n{log_path.read_text()}"
        finally:
            crowd.leave()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 20, "the server answering")
        assert poll(url, ["room"], 0, peek=True) == []
        text = log_path.read_text()
        assert "Traceback" not in text, text
        assert all("too many clients" in line for line in text.splitlines() if "retrying" in line), text
    finally:
        server.kill()
        server.wait()


def answers(url):
    try:
        return requests.get(url + "/longpolling/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
