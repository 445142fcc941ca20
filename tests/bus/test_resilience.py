"""The bus keeps working when PostgreSQL misbehaves, and lets go when closed.

The outages are real: a LISTEN backend terminated by an administrator, a
database refusing connections, a whole cluster restarted under a running
application. Clients are real HTTP long-polls that follow ``last``.
"""
import time

import psycopg2
import psycopg2.extensions
import requests

from bus import create_app, sendone
from bus.embedded_postgres import EmbeddedPostgres
from tests.support import ParkedPoll, admin_execute, create_database, listener_pids, poll, rpc, wait_for


def post(app, channel, payload):
    with app.database.transaction() as tx:
        sendone(tx, channel, "test", payload)


def first_poll(app, url, channel):
    """Post a first message and poll it with last=0, as a client starting
    up does; returns the ``last`` to follow from (and starts the listener)."""
    post(app, channel, "seed")
    entries = poll(url, [channel], 0)
    assert [e["message"]["payload"] for e in entries] == ["seed"]
    return entries[-1]["id"]


def park(app, url, channels, last):
    """A poll in the background, returned once the dispatcher holds it."""
    waiting = app.dispatcher.waiter_count
    parked = ParkedPoll(url, channels, last)
    wait_for(lambda: app.dispatcher.waiter_count == waiting + 1, 5, "the poll parking")
    return parked


def test_parked_poll_survives_a_terminated_listener(make_app, serve, database_url):
    app = make_app(timeout=10)
    http = serve(app)
    last = first_poll(app, http.url, "room")
    parked = park(app, http.url, ["room"], last)
    [old] = listener_pids(database_url)

    admin_execute(database_url, f"SELECT pg_terminate_backend({old})")
    wait_for(lambda: listener_pids(database_url) not in ([], [old]), 5, "the listener reconnecting")
    assert not parked.done.is_set(), "losing the listener must not end a parked poll"

    started = time.monotonic()
    post(app, "room", "after the kill")
    entries = parked.result(2.0)
    assert [e["message"]["payload"] for e in entries] == ["after the kill"]
    assert entries[0]["id"] > last
    assert time.monotonic() - started < 2.0


def test_message_committed_while_the_listener_is_down_is_delivered_on_reconnect(
        make_app, serve, database_url, server_url):
    app = make_app(timeout=15)
    http = serve(app)
    last = first_poll(app, http.url, "room")
    parked = park(app, http.url, ["room"], last)
    [old] = listener_pids(database_url)
    dbname = psycopg2.extensions.parse_dsn(database_url)["dbname"]

    # Keep the listener out while the message is committed: its NOTIFY then
    # reaches nobody, and only the catch-up read on reconnect can find it.
    # The app's pool keeps its open connection, so the post itself works.
    admin_execute(server_url, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        admin_execute(server_url, f"SELECT pg_terminate_backend({old})")
        wait_for(lambda: not app.dispatcher.connected.is_set(), 5, "the dispatcher noticing the lost listener")
        post(app, "room", "while nobody listened")
        time.sleep(0.5)
        assert not parked.done.is_set(), "nothing can deliver the message while the listener is down"
        assert listener_pids(database_url) == []
    finally:
        admin_execute(server_url, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')

    entries = parked.result(5.0)
    assert [e["message"]["payload"] for e in entries] == ["while nobody listened"]
    assert len(listener_pids(database_url)) == 1


def test_application_rides_out_a_postgres_restart(serve):
    cluster = EmbeddedPostgres(durable=False)
    cluster.start()
    app = None
    try:
        url = create_database(cluster.url(), "imbus_restart")
        app = create_app(url, timeout=15)

        @app.json_route("/test/post")
        def post_route(request, params):
            with app.database.transaction() as tx:
                sendone(tx, "room", "test", params["payload"])
            return True

        http = serve(app)

        def post_http(payload):
            return rpc(http.url, "/test/post", {"payload": payload}, timeout=10)

        received = []

        def follow(last, want):
            """Poll like a client, from ``last``, until ``want`` messages in all."""
            deadline = time.monotonic() + 10
            while len(received) < want and time.monotonic() < deadline:
                entries = poll(http.url, ["room"], last)
                received.extend(entries)
                last = max([last] + [e["id"] for e in entries])
            return last

        assert post_http("m1").json()["result"] is True
        received.extend(poll(http.url, ["room"], 0))
        last = received[-1]["id"]
        assert post_http("m2").json()["result"] is True
        last = follow(last, 2)
        parked = park(app, http.url, ["room"], last)

        cluster.stop()
        # Requests that need the database fail fast and cleanly while it is down.
        for call in (lambda: post_http("lost"), lambda: rpc(http.url, "/longpolling/poll",
                                                             {"channels": ["room"], "last": 0}, timeout=10)):
            started = time.monotonic()
            response = call()
            assert time.monotonic() - started < 3.0
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == -32001
            assert "Traceback" not in response.text
        assert not parked.done.is_set(), "a parked poll waits through the outage"

        cluster.start()
        assert requests.get(http.url + "/longpolling/health", timeout=5).status_code == 200
        assert post_http("m3").json()["result"] is True
        woken = parked.result(5.0)
        assert [e["message"]["payload"] for e in woken] == ["m3"]
        received.extend(woken)
        last = woken[-1]["id"]
        assert post_http("m4").json()["result"] is True
        assert post_http("m5").json()["result"] is True
        follow(last, 5)

        payloads = [e["message"]["payload"] for e in received]
        ids = [e["id"] for e in received]
        assert payloads == ["m1", "m2", "m3", "m4", "m5"]
        assert ids == sorted(set(ids))
        assert poll(http.url, ["room"], ids[-1], peek=True) == []
        # A fresh client (last=0, read from the database) sees the same five.
        assert [e["id"] for e in poll(http.url, ["room"], 0)] == ids
    finally:
        if app is not None:
            app.close()
        cluster.destroy()


def test_close_releases_parked_polls_and_the_listener(make_app, serve, database_url):
    app = make_app(timeout=30)
    http = serve(app)
    assert poll(http.url, ["room"], 0, peek=True) == []
    wait_for(lambda: len(listener_pids(database_url)) == 1, 5, "the listener connecting")
    parked = [ParkedPoll(http.url, [f"room-{n}", "shared"], 0) for n in range(3)]
    wait_for(lambda: app.dispatcher.waiter_count == 3, 5, "three polls parking")

    started = time.monotonic()
    app.close()
    for one in parked:
        assert one.result(2.0) == []
    assert time.monotonic() - started < 2.0
    wait_for(lambda: listener_pids(database_url) == [], 2, "the LISTEN connection closing")
