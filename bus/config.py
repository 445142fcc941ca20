"""Settings of a bus application, from arguments or the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Union

DEFAULT_TIMEOUT = 50.0
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_MAX_POLL_CHANNELS = 500
DEFAULT_MAX_CHANNEL_NAME = 256


def database_url_from_env() -> Optional[str]:
    """``$DATABASE_URL``, or a libpq keyword string when ``PG*`` variables are
    set (libpq reads them itself, so an empty DSN is enough), else None."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if any(os.environ.get(name) for name in ("PGHOST", "PGDATABASE", "PGPORT", "PGUSER", "PGSERVICE")):
        return ""
    return None


def require_database_url(database_url: Optional[str]) -> str:
    """The URL given, else the environment's, else a clear error."""
    if database_url is None:
        database_url = database_url_from_env()
    if database_url is None:
        raise RuntimeError("no database configured: pass database_url or set DATABASE_URL")
    return database_url


@dataclass
class Settings:
    """Everything a bus application needs to know.

    ``cors_origins`` are the origins whose pages may read the routes that
    declare CORS (the poll): ``"*"``, any, as Odoo 15's ``cors="*"``; or the
    exact origins (a string: comma-separated; empty: none). See ``bus.cors``.

    ``hold_back_gaps`` and ``shared_reads`` exist to measure what they buy:
    turned off, the bus behaves like Odoo 15 (it may skip a message committed
    out of id order, and every woken poller queries the database).
    ``max_poll_channels`` and ``max_channel_name`` bound what one poll may
    name, far above what a real client does: every named channel costs a
    parked poll memory and its audience lookups for a minute.
    """

    database_url: str
    timeout: float = DEFAULT_TIMEOUT
    retention: Optional[float] = None  # default: twice the timeout
    gc_interval: Optional[float] = None  # default: the timeout
    max_body: int = DEFAULT_MAX_BODY
    max_poll_channels: int = DEFAULT_MAX_POLL_CHANNELS
    max_channel_name: int = DEFAULT_MAX_CHANNEL_NAME  # characters
    pool_size: int = 32
    hold_back_gaps: bool = True
    shared_reads: bool = True
    install_schema: bool = True
    cors_origins: Union[str, Iterable[str]] = "*"
    #: Seconds start-up waits for a database that is full or not up yet.
    startup_timeout: float = 30.0
    #: Serve ``/websocket`` (see ``bus.websocket``); off, it is a 404 and
    #: clients long-poll.
    websocket: bool = True
    #: Seconds of silence after which a WebSocket is pinged, and after which
    #: an unanswered ping closes it.
    websocket_ping: float = 30.0
    #: Hold reads back while the polls the last read woke come back, when
    #: many were woken and rows keep coming (see ``bus.herd``): more messages
    #: delivered under a flood, for up to two herd rounds of latency.
    pace_herds: bool = True

    def __post_init__(self) -> None:
        if self.retention is None:
            self.retention = 2 * self.timeout
        if self.gc_interval is None:
            self.gc_interval = self.timeout
