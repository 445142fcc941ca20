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


def postgres_cpu_seconds(url: str) -> Optional[float]:
    """CPU seconds the PostgreSQL server behind ``url`` has used so far (see
    :func:`postmaster_cpu_seconds`); None unless it runs on this machine."""
    postmaster = postmaster_pid(url)
    return None if postmaster is None else postmaster_cpu_seconds(postmaster)


def postmaster_pid(url: str) -> Optional[int]:
    """The process id of the postmaster behind ``url``, if it runs on this
    machine (as seen from /proc); None otherwise."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT pg_backend_pid()")
            backend = cr.fetchone()[0]
        try:
            return int(_stat(backend)[1])
        except (OSError, ValueError):
            return None
    finally:
        conn.close()


def postmaster_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: its postmaster, the backends still
    running and those that exited (the kernel adds a reaped child's time to
    its parent's). Reads /proc only, so that measuring costs the server
    nothing. On a shared server it counts everyone's work."""
    fields = _stat(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                child = _stat(int(entry))
            except (OSError, ValueError):
                continue  # gone meanwhile
            if child[1] == str(postmaster):
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ... (field 3 on)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()
