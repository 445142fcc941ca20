"""Helpers shared by the tests: databases, an HTTP server in the test
process, and a small JSON-RPC client."""
from __future__ import annotations

import json
import threading
import uuid
from typing import Any, Optional

import psycopg2
import psycopg2.extensions
import requests

from bus.dispatcher import APPLICATION_NAME


def admin_url(url: str) -> str:
    """The same server's ``postgres`` database, for CREATE/DROP DATABASE."""
    params = psycopg2.extensions.parse_dsn(url)
    params["dbname"] = "postgres"
    return psycopg2.extensions.make_dsn(**params)


def _with_db(url: str, name: str) -> str:
    params = psycopg2.extensions.parse_dsn(url)
    params["dbname"] = name
    return psycopg2.extensions.make_dsn(**params)


def admin_execute(server_url: str, statement: str) -> None:
    """Run a statement outside any transaction (CREATE/DROP/ALTER DATABASE)."""
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute(statement)
    finally:
        conn.close()


def create_database(server_url: str, name: str) -> str:
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
    return _with_db(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class HttpServer:
    """The app behind a real socket: gevent's pywsgi or Werkzeug's threaded server."""

    def __init__(self, app, mode: str) -> None:
        self.mode = mode
        if mode == "gevent":
            import socket

            from gevent.pywsgi import WSGIServer

            from bus.handler import Handler

            listener = socket.socket()
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1024)
            self._server = WSGIServer(listener, app, log=None, handler_class=Handler)
            self._server.start()
            self.port = listener.getsockname()[1]
        else:
            from bus.takeover import threaded_server

            self._server = threaded_server("127.0.0.1", 0, app)
            self.port = self._server.server_port
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.mode == "gevent":
            self._server.stop(timeout=1)
        else:
            self._server.shutdown()
            self._server.server_close()


def rpc(url: str, path: str, params: Optional[dict] = None, *, session: Optional[requests.Session] = None,
        timeout: float = 30) -> requests.Response:
    """POST one JSON-RPC call; returns the raw HTTP response."""
    body = {"jsonrpc": "2.0", "method": "call", "params": params or {}, "id": uuid.uuid4().int % 10**9}
    return (session or requests).post(url + path, data=json.dumps(body),
                                      headers={"Content-Type": "application/json"}, timeout=timeout)


def result(response: requests.Response) -> Any:
    """The ``result`` of a successful call (fails the test otherwise)."""
    assert response.status_code == 200, response.text
    payload = response.json()
    assert "error" not in payload, payload
    return payload["result"]


#: ``data.name`` of the errors an application decides on, as Odoo 15 names
#: them: its web client picks the dialog it shows by this name.
INVALID_PARAMS = "odoo.exceptions.ValidationError"
ACCESS_DENIED = "odoo.exceptions.AccessDenied"
SESSION_EXPIRED = "odoo.http.SessionExpiredException"
NOT_FOUND = "werkzeug.exceptions.NotFound"
SERVER_ERROR = "builtins.Exception"

#: Odoo 15's ``error.code`` and ``error.message`` for each of them.
_ODOO_HEADINGS = {SESSION_EXPIRED: (100, "Odoo Session Expired"), NOT_FOUND: (404, "404: Not Found")}
_DATA_FIELDS = ["arguments", "context", "debug", "message", "name"]


def odoo_error(status: int, body: dict, name: str) -> dict:
    """``body``'s error, checked to be the application error ``name`` as
    Odoo 15's web client reads one: HTTP 200 (any other status is a lost
    connection to it), Odoo's code and heading, every ``data`` field, the
    text in ``data.message`` and ``data.arguments[0]``, no traceback."""
    assert status == 200, (status, body)
    error = body["error"]
    data = error["data"]
    assert data["name"] == name, body
    assert (error["code"], error["message"]) == _ODOO_HEADINGS.get(name, (200, "Odoo Server Error")), body
    assert sorted(data) == _DATA_FIELDS and data["context"] == {}, body
    assert data["message"] and data["arguments"] == [data["message"]], body
    assert "Traceback" not in json.dumps(body) and len(data["debug"]) < 200, body
    return error


def transport_error(response: requests.Response, status: int, code: int) -> dict:
    """The error of an answer that keeps an HTTP error status (a body that
    cannot be read or is too large, the database out of reach), still with a
    JSON-RPC body that has every ``data`` field and no traceback."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert sorted(error["data"]) == _DATA_FIELDS, error
    assert "Traceback" not in response.text
    return error


def poll(url: str, channels: list, last: int, *, session: Optional[requests.Session] = None, **options) -> list[dict]:
    return result(rpc(url, "/longpolling/poll", {"channels": channels, "last": last, "options": options},
                      session=session))


def wait_for(predicate, timeout: float, what: str) -> None:
    """Wait until ``predicate()`` is true; fail the test saying ``what`` did not happen."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.02)


def post(app, target, payload, kind: str = "test") -> None:
    """One bus notification, written and committed as an application's would be."""
    from bus import sendone

    with app.database.transaction() as tx:
        sendone(tx, target, kind, payload)


def wait_parked(app, count: int = 1) -> None:
    """Until ``count`` polls (or WebSocket rounds) wait in the app's dispatcher."""
    wait_for(lambda: app.dispatcher.waiter_count >= count, 10, f"{count} parked poll(s)")


class ParkedPoll:
    """A long-poll left waiting in the background, the way a browser tab
    keeps one open (a thread, or a greenlet when the suite runs under gevent)."""

    def __init__(self, url: str, channels: list, last: int, *, session: Optional[requests.Session] = None,
                 **options) -> None:
        self._answer: Optional[list] = None
        self._error: Optional[BaseException] = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, channels, last, session, options), daemon=True)
        self._thread.start()

    def _run(self, url: str, channels: list, last: int, session: Optional[requests.Session], options: dict) -> None:
        try:
            self._answer = poll(url, channels, last, session=session, **options)
        except BaseException as exc:  # handed to the test by result()
            self._error = exc
        finally:
            self.done.set()

    def result(self, timeout: float) -> list[dict]:
        """The poll's answer, failing the test if it takes over ``timeout`` seconds."""
        assert self.done.wait(timeout), f"the parked poll did not answer within {timeout}s"
        if self._error is not None:
            raise self._error
        return self._answer


def listener_pids(database_url: str) -> list[int]:
    """Backends LISTENing for the bus on this database (one per serving
    process). Asked through the maintenance database, so it also works while
    the database itself refuses connections."""
    dbname = psycopg2.extensions.parse_dsn(database_url)["dbname"]
    conn = psycopg2.connect(admin_url(database_url))
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s ORDER BY pid",
                       (dbname, APPLICATION_NAME))
            return [pid for pid, in cr.fetchall()]
    finally:
        conn.close()


class Crowd:
    """Every connection the server admits, held until released: a server
    that is full ("too many clients")."""

    def __init__(self, url: str) -> None:
        self.connections = []
        while True:
            try:
                self.connections.append(psycopg2.connect(url))
            except psycopg2.OperationalError as exc:
                assert "too many clients" in str(exc), exc
                break
        assert self.connections, "the crowd could not connect at all"

    def leave(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections = []


def start_up_retries(caplog) -> list:
    """The log records of an application retrying its start-up."""
    return [r for r in caplog.records if r.name == "bus.database" and "retrying" in r.getMessage()]


def build_in_background(build):
    """Run ``build()`` in a thread (a greenlet under gevent); returns the
    thread and the lists that receive its result or its exception."""
    built: list = []
    failed: list = []

    def run() -> None:
        try:
            built.append(build())
        except BaseException as exc:  # handed to the test
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, built, failed
