"""Fixtures: a real PostgreSQL, a fresh database per test, and the app served
over real HTTP.

``IMBUS_TEST_MODE=gevent`` runs the whole suite with gevent monkey-patching
(the app under gevent's pywsgi, psycopg2 made cooperative); otherwise the app
runs under Werkzeug's threaded server.
"""
import os

MODE = os.environ.get("IMBUS_TEST_MODE", "threaded")
if MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from bus.config import database_url_from_env  # noqa: E402
from bus.embedded_postgres import EmbeddedPostgres  # noqa: E402
from tests.support import HttpServer, admin_url, create_database, drop_database  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server's maintenance URL: the configured one, or a
    private throwaway cluster."""
    configured = database_url_from_env()
    if configured is not None:
        yield admin_url(configured)
        return
    cluster = EmbeddedPostgres(durable=False)
    cluster.start()
    try:
        yield cluster.url()
    finally:
        cluster.destroy()


@pytest.fixture
def database_url(server_url):
    """A database of its own for each test, dropped afterwards."""
    name = f"imbus_test_{uuid.uuid4().hex[:12]}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="module")
def small_cluster():
    """A private PostgreSQL that admits only six connections, superusers
    included: easy to fill."""
    cluster = EmbeddedPostgres(durable=False, settings={"max_connections": "6",
                                                        "superuser_reserved_connections": "0"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def small_database(small_cluster):
    name = f"imbus_small_{uuid.uuid4().hex[:12]}"
    url = create_database(small_cluster.url(), name)
    try:
        yield url
    finally:
        drop_database(small_cluster.url(), name)


@pytest.fixture
def make_app(database_url):
    """Build apps on the test's database; all are closed at the end."""
    from bus import create_app

    apps = []

    def make(**options):
        options.setdefault("timeout", 5.0)
        app = create_app(database_url, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def serve():
    """Serve an app over HTTP on 127.0.0.1 in the suite's mode."""
    servers = []

    def start(app):
        server = HttpServer(app, MODE)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def http(app, serve):
    return serve(app)
