"""The database a benchmark runs against: a fresh database on $DATABASE_URL's
server, or a private PostgreSQL cluster started for the run and destroyed
after it, so no benchmark touches anyone else's data."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator, Optional

import psycopg2
import psycopg2.extensions

from bus import schema
from bus.database import Database
from bus.embedded_postgres import EmbeddedPostgres


def _with_dbname(url: str, dbname: str) -> str:
    params = psycopg2.extensions.parse_dsn(url)
    params["dbname"] = dbname
    return psycopg2.extensions.make_dsn(**params)


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(_with_dbname(url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(statement)
    conn.close()


@contextmanager
def bench_database(*, durable: bool = True, settings: Optional[dict[str, str]] = None) -> Iterator[str]:
    """Yield the URL of an empty database holding the bus schema.

    ``durable`` only applies to the private cluster (fsync on: a commit waits
    for the disk, as in production); on $DATABASE_URL the server's own
    settings stand and ``settings`` is ignored.
    """
    external = os.environ.get("DATABASE_URL")
    cluster = None
    if external:
        server_url = external
    else:
        cluster = EmbeddedPostgres(durable=durable, settings={"max_connections": "400", **(settings or {})})
        cluster.start()
        server_url = cluster.url()
    name = f"imbus_bench_{uuid.uuid4().hex[:8]}"
    try:
        _admin(server_url, f'CREATE DATABASE "{name}"')
        url = _with_dbname(server_url, name)
        database = Database(url, maxconn=2)
        schema.install(database)
        database.close()
        yield url
    finally:
        try:
            _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            if cluster is not None:
                cluster.destroy()


def _scalar(url: str, query: str, params: tuple = ()) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cr:
            cr.execute(query, params)
            return cr.fetchone()[0]
    finally:
        conn.close()


def max_bus_id(url: str, channel: Optional[str] = None) -> int:
    """The newest bus id, or the newest on ``channel`` (a channel key)."""
    if channel is None:
        return _scalar(url, "SELECT COALESCE(max(id), 0) FROM bus_bus")
    return _scalar(url, "SELECT COALESCE(max(id), 0) FROM bus_bus WHERE channel = %s", (channel,))


def bus_row_count(url: str) -> int:
    return _scalar(url, "SELECT count(*) FROM bus_bus")
