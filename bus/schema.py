"""The bus tables, created idempotently at start-up (or by ``python -m bus schema``)."""
from __future__ import annotations

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_bus (
    id bigserial PRIMARY KEY,
    create_date timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    channel text NOT NULL,
    message text NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_bus_create_date_idx ON bus_bus (create_date);
CREATE INDEX IF NOT EXISTS bus_bus_channel_id_idx ON bus_bus (channel, id);
-- One row: the highest id garbage collection ever deleted. A poller whose
-- "last" is below it may have missed notifications and is told so.
CREATE TABLE IF NOT EXISTS bus_gc (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_deleted_id bigint NOT NULL DEFAULT 0
);
INSERT INTO bus_gc (singleton) VALUES (true) ON CONFLICT DO NOTHING;
-- One row per dispatcher connection: the position its process had taken as
-- final when it last said. Garbage collection deletes nothing above the
-- lowest position of a live one (see bus.models.collect_garbage).
CREATE TABLE IF NOT EXISTS bus_reader (
    id serial PRIMARY KEY,
    position bigint NOT NULL
);
"""

# Serialises concurrent start-ups: CREATE ... IF NOT EXISTS is not safe
# against itself running in two processes at once.
_SCHEMA_LOCK = 0x1B05


def install(database: Database) -> None:
    """Create what is missing; existing tables and rows are left alone."""
    with database.transaction() as tx:
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        tx.execute(SCHEMA)
