"""The chat starting on a full PostgreSQL waits for a connection instead of
exiting: for its tables, and for its signing secret, which it loads from
the database at start-up too."""
import logging

import pytest

from bus.app import create_app as create_bus_app
from mail import schema
from mail.app import create_app
from mail.demo_data import install_demo_data
from tests.mail.support import login, ok
from tests.support import Crowd, build_in_background, start_up_retries, wait_for


@pytest.mark.parametrize("install_schema", [True, False], ids=["tables", "secret"])
def test_the_chat_starting_on_a_full_server_waits_for_a_connection(small_database, serve, caplog, install_schema):
    if not install_schema:
        # Tables in place: loading the secret is the first use of the database.
        prepared = create_bus_app(small_database)
        schema.install(prepared.database)
        prepared.close()
    caplog.set_level(logging.WARNING, logger="bus.database")
    crowd = Crowd(small_database)
    try:
        thread, built, failed = build_in_background(
            lambda: create_app(small_database, timeout=5, install_schema=install_schema))
        wait_for(lambda: len(start_up_retries(caplog)) >= 3 or failed, 10, "three retries")
        assert not failed, f"the chat gave up at once: {failed[0]!r}"
    finally:
        crowd.leave()
    thread.join(10)
    assert built, failed
    app = built[0]
    try:
        install_demo_data(app.database)
        url = serve(app).url
        assert ok(url, "/web/session/get_session_info", {}, login(url, "demo"))["username"] == "demo"
    finally:
        app.close()
