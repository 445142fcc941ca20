"""Logging in and out: a signed cookie, anonymous on anything doubtful."""
import time

import requests
from itsdangerous import URLSafeTimedSerializer
from werkzeug.test import Client

from mail.app import create_app
from mail.demo_data import install_demo_data
from tests.mail.support import (
    TEST_SECRET,
    call,
    error_name,
    login,
    message_ids,
    ok,
    partner_id,
    poll_as,
    poll_until,
    query,
    refused,
)
from tests.support import ACCESS_DENIED, INVALID_PARAMS


def test_authenticate_sets_a_signed_httponly_lax_cookie(url, database_url):
    session = requests.Session()
    body = call(url, "/web/session/authenticate", {"login": "demo", "password": "demo"}, session)
    info = body["result"]
    assert info["username"] == "demo"
    assert info["name"] == "Marc Demo"
    assert info["partner_id"] == partner_id(database_url, "demo")
    assert isinstance(info["uid"], int)
    cookie = next(c for c in session.cookies if c.name == "session_id")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Lax"
    assert not cookie.secure  # plain HTTP could not send a secure cookie back
    version = query(database_url, "SELECT session_version FROM res_users WHERE id = %s", (info["uid"],))[0][0]
    assert URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").loads(cookie.value) == {
        "uid": info["uid"], "sv": version}
    assert ok(url, "/web/session/get_session_info", {}, session)["uid"] == info["uid"]

def test_wrong_password_is_refused_without_cookie(url):
    for login_name, password in [("demo", "wrong"), ("nobody", "demo"), ("demo", "")]:
        session = requests.Session()
        body = call(url, "/web/session/authenticate", {"login": login_name, "password": password}, session)
        refused(body, ACCESS_DENIED)
        assert "session_id" not in session.cookies

def test_authenticate_checks_parameters_and_database_name(url):
    assert error_name(call(url, "/web/session/authenticate", {"login": "demo"})) == INVALID_PARAMS
    assert error_name(call(url, "/web/session/authenticate", {"login": 1, "password": "x"})) == INVALID_PARAMS
    body = call(url, "/web/session/authenticate", {"db": "other_db", "login": "demo", "password": "demo"})
    assert error_name(body) == ACCESS_DENIED

def test_anonymous_session_info(url):
    assert ok(url, "/web/session/get_session_info")["uid"] is False

def test_destroy_logs_out(url):
    session = login(url, "admin")
    assert ok(url, "/mail/init_messaging", {}, session)["current_partner"]["name"] == "Mitchell Admin"
    ok(url, "/web/session/destroy", {}, session)
    assert "session_id" not in session.cookies
    assert ok(url, "/web/session/get_session_info", {}, session)["uid"] is False
    assert call(url, "/mail/init_messaging", {}, session)["error"]["code"] == 100

def test_bad_cookies_are_anonymous_not_errors(url, database_url):
    uid = query(database_url, "SELECT id FROM res_users WHERE login = 'admin'")[0][0]
    forged = [
        "garbage",
        "",
        URLSafeTimedSerializer("another-secret", salt="imbus.session").dumps({"uid": uid}),
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": uid})[:-2] + "xx",
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps(["not", "a", "dict"]),
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": "1"}),
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": 99999, "sv": 0}),
        # Well signed, but without a session version or with another one.
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": uid}),
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": uid, "sv": 1}),
        URLSafeTimedSerializer(TEST_SECRET, salt="imbus.session").dumps({"uid": uid, "sv": True}),
    ]
    for value in forged:
        session = requests.Session()
        session.cookies.set("session_id", value)
        assert ok(url, "/web/session/get_session_info", {}, session)["uid"] is False
        assert call(url, "/mail/init_messaging", {}, session)["error"]["code"] == 100

def test_a_copied_cookie_stops_working_at_logout(make_mail_app, serve, database_url):
    url = serve(make_mail_app(timeout=1)).url
    session, admin = login(url, "demo"), login(url, "admin")
    copy = requests.Session()
    copy.cookies.set("session_id", session.cookies["session_id"])
    marc = partner_id(database_url, "demo")
    general = query(database_url, "SELECT id FROM mail_channel WHERE name = 'general'")[0][0]

    def say(body):
        return ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general,
                                              "post_data": {"body": body}}, admin)["id"]

    assert ok(url, "/mail/init_messaging", {}, copy)["current_partner"]["id"] == marc
    before = say("before")
    assert before in message_ids(poll_until(url, copy, lambda notes: before in message_ids(notes)))
    ok(url, "/web/session/destroy", {}, session)
    assert ok(url, "/web/session/get_session_info", {}, copy)["uid"] is False
    for path in ["/mail/init_messaging", "/mail/channel/search_public"]:
        assert call(url, path, {}, copy)["error"]["code"] == 100
    # A poll with the stale cookie is anonymous: it hears none of Marc's
    # channels and does not bring Marc back online.
    last = query(database_url, "SELECT max(id) FROM bus_bus")[0][0]
    say("after")
    assert poll_as(url, copy, last) == []
    assert query(database_url, "SELECT count(*) FROM bus_presence WHERE partner_id = %s", (marc,)) == [(0,)]
    # Logging in again gives a cookie that works; the copy stays dead.
    fresh = login(url, "demo")
    assert ok(url, "/web/session/get_session_info", {}, fresh)["partner_id"] == marc
    again = say("again")
    assert again in message_ids(poll_until(url, fresh, lambda notes: again in message_ids(notes)))
    assert call(url, "/mail/init_messaging", {}, copy)["error"]["code"] == 100


def test_logging_out_with_a_stale_cookie_changes_nothing(url, database_url):
    session = login(url, "demo")
    copy = requests.Session()
    copy.cookies.set("session_id", session.cookies["session_id"])
    ok(url, "/web/session/destroy", {}, session)
    fresh = login(url, "demo")
    ok(url, "/web/session/destroy", {}, copy)
    assert ok(url, "/web/session/get_session_info", {}, fresh)["username"] == "demo"


def test_the_cookie_is_secure_behind_https(mail_app):
    client = Client(mail_app)
    answer = client.post("/web/session/authenticate", base_url="https://chat.example/",
                         json={"jsonrpc": "2.0", "method": "call", "id": 1,
                               "params": {"login": "demo", "password": "demo"}})
    assert answer.status_code == 200 and "result" in answer.json
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("session_id=") and "; Secure" in cookie and "HttpOnly" in cookie
    cleared = client.post("/web/session/destroy", base_url="https://chat.example/",
                          json={"jsonrpc": "2.0", "method": "call", "id": 2, "params": {}})
    assert "; Secure" in cleared.headers["Set-Cookie"] and "Expires=Thu, 01 Jan 1970" in cleared.headers["Set-Cookie"]


def test_expired_cookie_is_anonymous(make_mail_app, serve, database_url):
    app = make_mail_app()
    app.sessions.max_age = 0  # every cookie is already too old
    url = serve(app).url
    session = login(url, "admin")
    time.sleep(1.1)
    assert ok(url, "/web/session/get_session_info", {}, session)["uid"] is False

def test_generated_secret_is_kept_in_the_database(database_url, monkeypatch, serve):
    monkeypatch.delenv("IMBUS_SECRET_KEY", raising=False)
    first = create_app(database_url, timeout=5)
    try:
        install_demo_data(first.database)
        session = login(serve(first).url, "demo")
    finally:
        first.close()
    stored = query(database_url, "SELECT value FROM imbus_config WHERE key = 'session_secret'")[0][0]
    assert len(stored) >= 32
    second = create_app(database_url, timeout=5)
    try:
        info = ok(serve(second).url, "/web/session/get_session_info", {}, session)
        assert info["username"] == "demo"
    finally:
        second.close()

def test_secret_from_environment(database_url, monkeypatch, serve):
    monkeypatch.setenv("IMBUS_SECRET_KEY", "from-the-environment")
    app = create_app(database_url, timeout=5)
    try:
        install_demo_data(app.database)
        session = login(serve(app).url, "admin")
        token = session.cookies["session_id"]
        assert URLSafeTimedSerializer("from-the-environment", salt="imbus.session").loads(token)
        assert query(database_url, "SELECT count(*) FROM imbus_config")[0][0] == 0
    finally:
        app.close()


def test_a_remembered_cookie_still_expires(make_mail_app, serve):
    """A cookie's signature is checked once, not its age."""
    app = make_mail_app()
    url = serve(app).url
    session = login(url, "admin")
    assert ok(url, "/web/session/get_session_info", {}, session)["username"] == "admin"
    app.sessions.max_age = 1
    time.sleep(2.1)
    assert ok(url, "/web/session/get_session_info", {}, session)["uid"] is False
