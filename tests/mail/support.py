"""Helpers for the chat tests: logged-in clients, polling as a user, and
reading what the database really holds."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any, Optional

import psycopg2
import requests

from tests.support import ParkedPoll, odoo_error, rpc, wait_for

TEST_SECRET = "test-secret-key"
DEMO_PASSWORDS = {"admin": "admin", "demo": "demo", "jane": "jane", "joel": "joel"}


class FakeClock:
    """A clock the test moves by hand; presence reads the time from it."""

    def __init__(self, start: datetime = datetime(2024, 1, 1, 12, 0, 0)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def login(url: str, user: str, password: Optional[str] = None) -> requests.Session:
    session = requests.Session()
    answer = rpc(url, "/web/session/authenticate",
                 {"login": user, "password": password or DEMO_PASSWORDS[user]}, session=session)
    assert answer.status_code == 200 and "result" in answer.json(), answer.text
    return session


def call(url: str, path: str, params: Optional[dict] = None, session: Optional[requests.Session] = None) -> dict:
    """The decoded JSON-RPC answer (result or error) plus the HTTP status."""
    answer = rpc(url, path, params or {}, session=session)
    body = answer.json()
    body["status"] = answer.status_code
    return body


def ok(url: str, path: str, params: Optional[dict] = None, session: Optional[requests.Session] = None) -> Any:
    body = call(url, path, params, session)
    assert body["status"] == 200 and "error" not in body, body
    return body["result"]


def error_name(body: dict) -> Optional[str]:
    return body.get("error", {}).get("data", {}).get("name")


def refused(body: dict, name: str) -> dict:
    """The error of an answer from :func:`call`, checked to be the
    application error ``name`` as Odoo 15 sends it (``odoo_error``)."""
    return odoo_error(body["status"], body, name)


def poll_as(url: str, session: Optional[requests.Session], last: int = 0, channels: Optional[list] = None,
            **options: Any) -> list[dict]:
    return ok(url, "/longpolling/poll", {"channels": channels or [], "last": last, "options": options}, session)


def park(app: Any, url: str, session: Optional[requests.Session], last: int, channels: tuple = ()) -> ParkedPoll:
    """A poll of ``session`` from ``last``, parked: once the app has read up
    to ``last`` (so only what comes next can wake it) and the poll waits."""
    wait_for(lambda: app.dispatcher.position >= last, 10, "the dispatcher reading every row")
    parked_before = app.dispatcher.waiter_count
    parked = ParkedPoll(url, list(channels), last, session=session)
    wait_for(lambda: app.dispatcher.waiter_count > parked_before, 10, "the poll parking")
    return parked


def query(database_url: str, sql: str, params: Any = None) -> list[tuple]:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cr:
            cr.execute(sql, params)
            return cr.fetchall()
    finally:
        conn.close()


def newest_bus_id(database_url: str) -> int:
    return query(database_url, "SELECT COALESCE(max(id), 0) FROM bus_bus")[0][0]


def bus_notifications(database_url: str) -> list[dict]:
    """Every stored bus row, decoded: channel (as a list), type, payload."""
    rows = query(database_url, "SELECT id, channel, message FROM bus_bus ORDER BY id")
    notes = []
    for row_id, channel, message in rows:
        decoded = json.loads(message)
        notes.append({"id": row_id, "channel": json.loads(channel)[1:], "type": decoded["type"],
                      "payload": decoded["payload"]})
    return notes


def snapshot(database_url: str) -> tuple:
    """A fingerprint of everything a chat route may write."""
    return query(
        database_url,
        "SELECT (SELECT count(*) FROM mail_message), (SELECT count(*) FROM bus_bus),"
        " (SELECT count(*) FROM mail_channel), (SELECT count(*) FROM mail_channel_partner),"
        " (SELECT string_agg(concat_ws(':', channel_id, partner_id, seen_message_id, is_pinned), ','"
        "  ORDER BY channel_id, partner_id) FROM mail_channel_partner),"
        " (SELECT count(*) FROM bus_presence)",
    )[0]


def partner_id(database_url: str, login_name: str) -> int:
    return query(database_url, "SELECT partner_id FROM res_users WHERE login = %s", (login_name,))[0][0]


def channel_id(database_url: str, name: str) -> int:
    return query(database_url, "SELECT id FROM mail_channel WHERE name = %s", (name,))[0][0]


def message_ids(notes: list[dict]) -> list[int]:
    """Ids of the chat messages carried by new_message notifications."""
    return [n["message"]["payload"]["message"]["id"] for n in notes
            if n["message"]["type"] == "mail.channel/new_message"]


def poll_until(url: str, session: Optional[requests.Session], done, channels: Optional[list] = None,
               timeout: float = 10.0, since: int = 0) -> list[dict]:
    """Poll like a client (``last`` = highest id seen, from ``since``) until
    ``done(notes)`` holds for everything received, or ``timeout`` passes.

    A poll answers as soon as it has something, and NOTIFY reaches the
    dispatcher asynchronously, so one poll may come back before a row that
    was committed a moment ago.
    """
    notes: list[dict] = []
    last = since
    deadline = time.monotonic() + timeout
    while not done(notes) and time.monotonic() < deadline:
        batch = poll_as(url, session, last, channels)
        notes.extend(batch)
        last = max([last, *(n["id"] for n in batch)])
    return notes
