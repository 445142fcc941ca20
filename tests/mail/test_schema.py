"""The chat tables are installed idempotently, and a database created before
a column existed gets it at the next start-up."""
import psycopg2

from mail import schema
from tests.mail.support import login, ok, query

ADDED_COLUMNS = [("res_users", "session_version"), ("bus_presence", "pushed_status")]


def columns(database_url):
    return set(query(database_url, "SELECT table_name::text, column_name::text FROM information_schema.columns"
                                   " WHERE table_schema = 'public'"))


def test_a_database_from_before_the_added_columns_is_upgraded(mail_app, serve, database_url):
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cr:
            cr.execute("ALTER TABLE res_users DROP COLUMN session_version")
            cr.execute("ALTER TABLE bus_presence DROP COLUMN pushed_status")
    finally:
        conn.close()
    assert not set(ADDED_COLUMNS) & columns(database_url)
    schema.install(mail_app.database)
    assert set(ADDED_COLUMNS) <= columns(database_url)
    url = serve(mail_app).url
    assert ok(url, "/web/session/get_session_info", {}, login(url, "demo"))["username"] == "demo"


def test_installing_again_changes_nothing(mail_app, database_url):
    before = columns(database_url)
    schema.install(mail_app.database)
    schema.install(mail_app.database)
    assert columns(database_url) == before
