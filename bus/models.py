"""What the bus stores and fetches: every SQL statement of the bus lives here.

Writes go through :func:`sendmany` inside a caller's :class:`Transaction`;
reads are the dispatcher's shared read (:func:`read_after`) and the pollers'
catch-up read (:func:`fetch`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Tuple

import psycopg2.extensions

from .channels import NOTIFY_CHANNEL, Row, Target, channel_with_db, encode_message, split_notify_payloads
from .database import Database, Transaction, execute_prepared

_PENDING = "bus.pending"

#: The advisory lock (one bigint key) every bus writer holds, shared, from
#: just before it draws bus ids until its transaction ends: while a gap is
#: open, the reader waits only for the transactions that hold it (see
#: bus/watermark.py), not for every transaction of the database.
_WRITER_LOCK = 0x1B07

# Both start by taking the writers' lock and pg_current_xact_id(), which gives
# the transaction its id, *before* nextval() hands out bus ids. The
# dispatcher relies on it: a bus id that is missing below a visible one then
# belongs to a transaction that already had its id, and the lock, when the
# reader's snapshot was taken (see bus/watermark.py). Two statements in one
# string still make one round trip, and cost the server no more than the
# calls folded into the INSERT's WHERE. The lock is shared: writers never
# wait for each other.
_INSERT_ONE = (
    f"SELECT pg_advisory_xact_lock_shared({_WRITER_LOCK}), pg_current_xact_id();"
    " INSERT INTO bus_bus (channel, message) VALUES (%s, %s)"
)
_INSERT_MANY = (
    f"SELECT pg_advisory_xact_lock_shared({_WRITER_LOCK}), pg_current_xact_id();"
    " INSERT INTO bus_bus (channel, message)"
    " SELECT c, m FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(c, m, n) ORDER BY n"
)


def sendone(tx: Transaction, target: Target, notification_type: str, payload: Any) -> None:
    """Queue one notification; see :func:`sendmany`."""
    sendmany(tx, [(target, notification_type, payload)])


def sendmany(tx: Transaction, notifications: Iterable[Tuple[Target, str, Any]]) -> None:
    """Queue notifications to be written with ``tx`` and announced after it commits.

    The rows are inserted by one statement that travels with the COMMIT, so
    a transaction that sends many times adds no round trip, and the NOTIFY
    runs once COMMIT has returned, in its own transaction, so a woken poller
    always finds the rows. On rollback nothing is written and nothing is
    announced.
    """
    pending = tx.data.get(_PENDING)
    if pending is None:
        pending = tx.data[_PENDING] = []
        tx.on_precommit(lambda: _write_pending(tx))
    dbname = tx.dbname
    for target, notification_type, payload in notifications:
        pending.append((channel_with_db(dbname, target), encode_message(notification_type, payload)))


def _write_pending(tx: Transaction) -> None:
    pending = tx.data.pop(_PENDING, [])
    if not pending:
        return
    if len(pending) == 1:
        # The common post. VALUES costs the server ~40 us less per commit
        # than the array form (array input, a function scan, a subquery).
        [(channel, message)] = pending
        tx.execute_at_commit(_INSERT_ONE, (channel, message))
        distinct = [channel]
    else:
        channels = [channel for channel, _ in pending]
        tx.execute_at_commit(_INSERT_MANY, (channels, [message for _, message in pending]))
        distinct = list(dict.fromkeys(channels))
    tx.on_postcommit(lambda: _announce(tx, distinct))


_NOTIFY = f"NOTIFY {NOTIFY_CHANNEL}, %s"


def _announce(tx: Transaction, channels: Sequence[str]) -> None:
    """NOTIFY ``channels`` to every listening process, in payloads PostgreSQL
    accepts, on the committed transaction's connection: no second checkout.

    Not inside the transaction: PostgreSQL would then hold its global NOTIFY
    lock through the COMMIT's WAL flush, and every posting transaction would
    commit one after the other."""
    payloads = list(split_notify_payloads(channels))
    # The NOTIFY command rather than SELECT pg_notify(): no query to plan
    # and execute, 5-10 % less CPU per post for the writer and for
    # PostgreSQL. The payload is still a bound (quoted) parameter.
    tx.execute(";".join([_NOTIFY] * len(payloads)), payloads)


@dataclass(frozen=True)
class ReadResult:
    """One shared read: the rows after a position, with the snapshot they were
    read in (its running transactions decide whether a gap may still fill)."""

    rows: list[Row]
    running: frozenset[int]
    xmax: int
    gc_floor: int

    def running_among(self, writers: frozenset[int]) -> frozenset[int]:
        """The transactions of ``running`` that are among ``writers`` (as
        :func:`bus_writers` gives them: the 32 low bits of their ids, which
        tell running transactions apart, since they are never 2^31 apart)."""
        return frozenset(x for x in self.running if x & 0xFFFFFFFF in writers)


_READ_AFTER = (
    "SELECT pg_current_snapshot()::text, g.last_deleted_id, b.id, b.channel, b.message"
    " FROM pg_current_snapshot() AS s CROSS JOIN bus_gc AS g"
    " LEFT JOIN LATERAL (SELECT id, channel, message FROM bus_bus WHERE id > $1::bigint ORDER BY id LIMIT $2::integer)"
    " AS b ON true ORDER BY b.id"
)


def read_after(cr: psycopg2.extensions.cursor, after_id: int, limit: int) -> ReadResult:
    """Every visible row with id > ``after_id``, in id order, and the snapshot.

    One statement, so the rows and ``pg_current_snapshot()`` describe the same
    instant; prepared, since planning it costs more than running it (about
    0.1 ms of every wake-up).
    """
    execute_prepared(cr, "imbus_read_after", _READ_AFTER, (after_id, limit))
    result = cr.fetchall()
    snapshot, gc_floor = result[0][0], result[0][1]
    _, xmax, xip = snapshot.split(":")
    running = frozenset(int(x) for x in xip.split(",")) if xip else frozenset()
    rows = [(row_id, channel, message) for _, _, row_id, channel, message in result if row_id is not None]
    return ReadResult(rows, running, int(xmax), gc_floor)


# Each transaction holds an exclusive lock on its own id for as long as it
# runs: joined on the virtual transaction, that names the holders of the
# writers' lock by transaction id. pg_locks, unlike pg_stat_activity, shows
# every role's locks.
_BUS_WRITERS = (
    "SELECT t.transactionid::text FROM pg_locks w JOIN pg_locks t ON t.virtualtransaction = w.virtualtransaction"
    " WHERE w.locktype = 'advisory' AND w.granted AND w.classid = 0 AND w.objid = %s AND w.objsubid = 1"
    " AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted"
)


def bus_writers(cr: psycopg2.extensions.cursor) -> frozenset[int]:
    """The transactions that hold the bus writers' lock now, by the 32 low
    bits of their ids (``pg_locks`` shows ``xid``, not ``xid8``)."""
    cr.execute(_BUS_WRITERS, (_WRITER_LOCK,))
    return frozenset(int(xid) for xid, in cr.fetchall())


def draw_transaction_id(cr: psycopg2.extensions.cursor) -> int:
    """A transaction id newer than every id that existed before this call,
    in a transaction that has completed when this returns (``cr`` is in
    autocommit mode): the horizon the watermark needs for a newly seen gap."""
    cr.execute("SELECT pg_current_xact_id()::text")
    return int(cr.fetchone()[0])


def gc_floor(database: Database) -> int:
    """The highest id garbage collection ever deleted."""
    with database.cursor() as cr:
        cr.execute("SELECT last_deleted_id FROM bus_gc")
        return cr.fetchone()[0]


def fetch(
    database: Database,
    channels: Sequence[str],
    after_id: int,
    upto_id: Optional[int] = None,
    younger_than: Optional[float] = None,
) -> list[Tuple[int, str]]:
    """(id, message) of rows on ``channels`` after ``after_id`` (and at most
    ``upto_id``, the last id known to be final), optionally only those created
    less than ``younger_than`` seconds ago."""
    query = "SELECT id, message FROM bus_bus WHERE channel = ANY(%s) AND id > %s"
    params: list[Any] = [list(channels), after_id]
    if upto_id is not None:
        query += " AND id <= %s"
        params.append(upto_id)
    if younger_than is not None:
        query += " AND create_date > (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)"
        params.append(younger_than)
    with database.cursor() as cr:
        cr.execute(query + " ORDER BY id", params)
        return cr.fetchall()


#: The advisory lock class a dispatcher's listening connection holds, with
#: its ``bus_reader`` id as second key, for as long as the connection lives.
#: PostgreSQL releases it when the session ends, however its process died,
#: and ``pg_locks`` shows it to every role: live readers are told from dead
#: ones exactly, with no heartbeat to wait out.
_READER_LOCK = 0x1B06


def register_reader(cr: psycopg2.extensions.cursor, position: int) -> int:
    """Count the listening connection of ``cr`` (autocommit) among the
    readers garbage collection waits for, at ``position``; returns its id.

    One statement: the row commits with its lock already held, so no
    collection can see the row without its lock and take it for dead."""
    cr.execute("WITH r AS (INSERT INTO bus_reader (position) VALUES (%s) RETURNING id)"
               " SELECT id, pg_advisory_lock(%s, id) FROM r", (position, _READER_LOCK))
    return cr.fetchone()[0]


# The UPDATE publishes the caller's position first; the rest, one statement
# in the same implicit transaction, sees it. Readers whose lock is gone are
# dead: their rows go, and they hold nothing back.
_COLLECT_GARBAGE = """
UPDATE bus_reader SET position = %(position)s WHERE id = %(reader)s;
WITH live AS MATERIALIZED (
    SELECT r.id, r.position FROM bus_reader r JOIN pg_locks l
    ON l.locktype = 'advisory' AND l.granted AND l.classid = %(lock)s::oid AND l.objid = r.id::oid
       AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), dead AS (
    DELETE FROM bus_reader WHERE id NOT IN (SELECT id FROM live)
), gone AS (
    DELETE FROM bus_bus
    WHERE create_date < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(retention)s)
      AND id <= COALESCE(LEAST(%(position)s, (SELECT min(position) FROM live)), 9223372036854775807)
    RETURNING id
)
UPDATE bus_gc SET last_deleted_id = GREATEST(last_deleted_id, (SELECT max(id) FROM gone))
RETURNING last_deleted_id
"""


def collect_garbage(database: Database, retention: float, position: Optional[int] = None,
                    reader: Optional[int] = None) -> int:
    """Delete the rows older than ``retention`` seconds that every live
    reader has taken as final; return the GC floor, the highest id ever
    deleted, which tells pollers behind it they missed rows.

    ``position`` and ``reader`` are the calling dispatcher's (None for one
    that keeps no position, in Odoo 15 mode). Age alone is not enough: a
    committed row held back behind a gap, or not yet read by a slower
    process, may be older than the retention and still undelivered. A
    reader's published position lags its real one by up to a collection
    interval, which only makes collection wait longer.
    """
    with database.cursor() as cr:
        cr.execute(_COLLECT_GARBAGE, {"retention": retention, "position": position, "reader": reader,
                                      "lock": _READER_LOCK})
        return cr.fetchone()[0]
