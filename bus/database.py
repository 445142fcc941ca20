"""Connections and transactions: a pool that survives a PostgreSQL restart,
and a transaction object with pre-commit and post-commit hooks.

The hooks are what make the post path safe: bus rows are written by a
pre-commit hook (so every notification of a transaction goes out in one
statement, sent with COMMIT) and NOTIFY runs from a post-commit hook (so no
poller can wake before the rows it will read are visible).
"""
from __future__ import annotations

import logging
import queue
import select
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Optional, TypeVar, Union

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.sql import Composable

_logger = logging.getLogger(__name__)

#: Errors that mean "this connection (or the server) is gone", as opposed to
#: errors in the SQL or the data.
DISCONNECT_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)

_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class DatabaseUnavailable(Exception):
    """The server cannot be reached right now; the caller may retry later."""


class RolledBack(Exception):
    """COMMIT found the transaction failed by an earlier statement whose
    error the caller caught, and PostgreSQL rolled it back."""


_ROLLED_BACK = "the transaction was rolled back: one of its statements had failed"

#: Errors after which the same work may well succeed a moment later: the
#: server cannot be reached or is full, or it could not run a statement
#: within the ``statement_timeout`` or ``lock_timeout`` that the database URL
#: sets (another session holding a table locked, a server overloaded). They
#: are the database's state, not the caller's mistake.
RETRYABLE_ERRORS = (DatabaseUnavailable, psycopg2.errors.QueryCanceled, psycopg2.errors.LockNotAvailable)
#: Seconds between two start-up attempts: doubling from the first to the most.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0

T = TypeVar("T")


def retry_until(deadline: float, work: Callable[[], T], what: str) -> T:
    """Run ``work``, again with back-off while it fails with one of the
    :data:`RETRYABLE_ERRORS`, until ``deadline`` (a ``time.monotonic()``
    value) has passed; then its last error is raised.

    For a server's start-up: restarted while PostgreSQL is full ("too many
    clients"), still starting up or not up yet, it would otherwise exit, and
    its process manager restart it in a loop. Each retry is one log line.
    """
    delay = RETRY_FIRST
    while True:
        try:
            return work()
        except RETRYABLE_ERRORS as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            wait = min(delay, left)
            _logger.warning("%s: %s; retrying in %.1fs", what, " ".join(str(exc).split()), wait)
            time.sleep(wait)
            delay = min(RETRY_MAX, delay * 2)


class CountingCursor(psycopg2.extensions.cursor):
    """Counts statements per pool, so tests and benchmarks can prove that the
    number of queries does not grow with the number of waiting pollers."""

    def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002 - DB-API name
        self.connection.info_counter.increment()
        return super().execute(query, vars)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def increment(self) -> None:
        with self._lock:
            self.value += 1


class _CountingConnection(psycopg2.extensions.connection):
    """A connection that knows which counter its cursors feed, and which
    statements it has prepared."""

    info_counter: _Counter
    prepared: set[str]


def execute_prepared(cr: psycopg2.extensions.cursor, name: str, statement: str, params: tuple) -> None:
    """Run ``statement`` (placeholders ``$1``, ``$2``...) as the prepared
    statement ``name`` of the cursor's connection, preparing it on first use.

    For the statements every poll or wake-up runs: PostgreSQL spends more
    time planning them than running them. Each connection prepares its own
    (a reconnect starts afresh), so this needs session-level pooling behind
    PgBouncer. The PREPARE is not counted: it is set-up, once per connection.
    """
    conn = cr.connection
    if name not in conn.prepared:
        psycopg2.extensions.cursor.execute(cr, f"PREPARE {name} AS {statement}")
        conn.prepared.add(name)
    try:
        cr.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
    except (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.FeatureNotSupported):
        # Deallocated behind our back (DISCARD ALL, a pooler), or its result
        # type changed (a migration): prepare afresh, once, where nothing
        # else of the caller's was rolled back with the failed EXECUTE.
        conn.prepared.clear()
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise
        psycopg2.extensions.cursor.execute(cr, "DEALLOCATE ALL")
        execute_prepared(cr, name, statement, params)


def _connection_lost(error: BaseException, conn: Optional[psycopg2.extensions.connection]) -> bool:
    """Whether ``error`` means the connection (or the server) is gone.

    psycopg2 raises deadlocks, serialization failures and statement timeouts
    as ``OperationalError`` too; they leave a healthy connection, which the
    pool keeps, and reach the caller as they are (the HTTP layer answers
    the timeouts as retryable: see :data:`RETRYABLE_ERRORS`).
    """
    if isinstance(error, psycopg2.InterfaceError):
        return True
    return isinstance(error, psycopg2.OperationalError) and (conn is None or bool(conn.closed))


def cooperate_with_gevent() -> None:
    """Make psycopg2 yield to the gevent hub while it waits on the server.

    Without this a LISTEN or a slow query blocks every greenlet of the
    process. Only done when gevent has patched the process, because the wait
    callback would make a threaded program slower for nothing.
    """
    try:
        from gevent import monkey
    except ImportError:
        return
    if monkey.is_module_patched("socket") and psycopg2.extensions.get_wait_callback() is None:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def _is_stale(conn: psycopg2.extensions.connection) -> bool:
    """True when an idle pooled connection is known to be dead.

    An idle connection has nothing to read; if its socket is readable the
    server has sent a termination message or closed it (a restart, an
    administrator's pg_terminate_backend). One zero-timeout poll costs no
    round trip, unlike a ``SELECT 1`` ping on every checkout. ``poll`` rather
    than ``select``: a server holding thousands of parked polls has socket
    numbers above 1023, which ``select`` refuses.
    """
    if conn.closed:
        return True
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Database:
    """A pool of connections to one database, plus the facts the bus needs
    about it (its name, a statement counter).

    The pool is the standard library's ``LifoQueue`` holding ``maxconn``
    slots: an idle connection, or ``None`` for a slot not connected yet (or
    whose connection failed). Callers queue, up to ``checkout_timeout``
    seconds, when every connection is out; the most recently returned
    connection goes out first, so a quiet process keeps few warm. A
    connection found dead at checkout (zero-cost check, no round trip) is
    replaced; whoever opens a transaction ends it, and one that comes back
    mid-transaction anyway is rolled back. SQLAlchemy's ``QueuePool`` did
    the same for 45 us more CPU per checkout and return, a quarter of a
    writer's CPU per post with 8 writers (measured with bench.write_throughput).
    """

    def __init__(self, dsn: str, *, maxconn: int = 32, connect_timeout: int = 5,
                 checkout_timeout: float = 30.0) -> None:
        cooperate_with_gevent()
        # JIT compilation costs milliseconds and pays off only on long
        # analytical queries; on a fresh table the planner's guesses can cross
        # its threshold and make every shared read 5 ms slower.
        options = psycopg2.extensions.parse_dsn(dsn).get("options", "")
        self.dsn = psycopg2.extensions.make_dsn(dsn, options=f"{options} -c jit=off".strip())
        self._connect_kwargs = {"connect_timeout": connect_timeout, "connection_factory": _CountingConnection}
        self.statements = _Counter()
        self.checkout_timeout = checkout_timeout
        self._idle: queue.LifoQueue[Optional[psycopg2.extensions.connection]] = queue.LifoQueue()
        for _ in range(maxconn):
            self._idle.put(None)
        self._dbname: Optional[str] = psycopg2.extensions.parse_dsn(dsn).get("dbname")

    def _create(self, **extra: Any) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, **self._connect_kwargs, **extra)
        conn.info_counter = self.statements
        conn.prepared = set()
        return conn

    @property
    def dbname(self) -> str:
        """The database name, which qualifies every channel."""
        if not self._dbname:
            with self.cursor() as cr:
                cr.execute("SELECT current_database()")
                self._dbname = cr.fetchone()[0]
        return self._dbname

    def connect(self, *, autocommit: bool = False, keepalive: bool = False,
                **parameters: Any) -> psycopg2.extensions.connection:
        """A connection outside the pool (the dispatcher's LISTEN connection),
        with extra libpq ``parameters`` such as ``application_name``.

        ``keepalive`` has the kernel probe an otherwise silent connection, so
        a listener whose peer vanished without a word (a dropped network)
        notices within about half a minute instead of waiting forever.
        """
        try:
            conn = self._create(**(_KEEPALIVE if keepalive else {}), **parameters)
        except DISCONNECT_ERRORS as exc:
            raise DatabaseUnavailable(str(exc).strip()) from exc
        conn.autocommit = autocommit
        return conn

    def _checkout(self) -> Any:
        """A pooled connection. After a restart every idle connection is dead:
        each one that comes out is replaced by a new connection."""
        try:
            conn = self._idle.get(timeout=self.checkout_timeout)
        except queue.Empty:
            raise DatabaseUnavailable("no database connection became free in time") from None
        if conn is not None and not _is_stale(conn):
            return conn
        if conn is not None:
            conn.close()
        try:
            # Keepalive on pooled connections too: one left idle at the bottom
            # of the stack behind a NAT that forgot it then shows as broken at
            # checkout instead of hanging its first statement.
            return self._create(**_KEEPALIVE)
        except BaseException as exc:
            self._idle.put(None)
            if isinstance(exc, DISCONNECT_ERRORS):
                raise DatabaseUnavailable(str(exc).strip()) from exc
            raise

    def _checkin(self, conn: Any, *, broken: bool) -> None:
        try:
            if not broken:
                _end_open_transaction(conn)
        except psycopg2.Error:
            broken = True
        finally:
            # Whatever interrupts the rollback (a gevent Timeout), the slot
            # goes back: a lost slot would shrink the pool for good.
            if broken or conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                conn.close()
                conn = None
            self._idle.put(conn)

    @contextmanager
    def cursor(self, *, autocommit: bool = True) -> Iterator[psycopg2.extensions.cursor]:
        """A pooled cursor for one-off statements outside a transaction."""
        conn = self._checkout()
        broken = False
        try:
            conn.autocommit = autocommit
            with conn.cursor(cursor_factory=CountingCursor) as cr:
                yield cr
            if not autocommit:
                conn.commit()
        except psycopg2.Error as exc:
            if not _connection_lost(exc, conn):
                raise
            broken = True
            raise DatabaseUnavailable(str(exc).strip()) from exc
        finally:
            self._checkin(conn, broken=broken)

    def transaction(self) -> Transaction:
        """A new transaction; use it as a context manager."""
        return Transaction(self)

    def close(self) -> None:
        """Close the idle connections; those in use stay usable and are
        returned as usual."""
        slots = []
        while True:
            try:
                slots.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for conn in slots:
            if conn is not None:
                conn.close()
            self._idle.put(None)


class Transaction:
    """One database transaction with hooks around its COMMIT, in as few round
    trips as its work allows.

    ``with db.transaction() as tx:`` commits on a clean exit and rolls back on
    an exception. Pre-commit hooks run inside the transaction, after the
    caller's own work; post-commit hooks run only once COMMIT has succeeded,
    and never after a rollback. ``tx.data`` is scratch space for hooks that
    accumulate work over the transaction (the bus keeps its pending
    notifications there).

    The transaction is opened and closed by hand on an autocommit connection
    rather than by psycopg2, which spends a round trip on ``BEGIN`` and one
    on ``COMMIT``: ``BEGIN`` travels with the first statement, and the
    statements queued with :meth:`execute_at_commit` travel with ``COMMIT``.
    A transaction that only sends bus notifications is one round trip to
    write and commit, and one to announce.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.data: dict[str, Any] = {}
        self._precommit: list[Callable[[], None]] = []
        self._postcommit: list[Callable[[], None]] = []
        self._at_commit: list[bytes] = []
        self._conn: Optional[psycopg2.extensions.connection] = None
        self._cursor: Optional[psycopg2.extensions.cursor] = None
        self._begun = False  # the server has the transaction open
        self._committed = False
        self._used = False

    @property
    def dbname(self) -> str:
        return self.database.dbname

    def __enter__(self) -> Transaction:
        if self._used:
            raise RuntimeError("a Transaction runs once: start another with database.transaction()")
        self._used = True
        conn = self.database._checkout()
        try:
            conn.autocommit = True
            self._cursor = conn.cursor(cursor_factory=CountingCursor)
        except BaseException:
            # __exit__ will not run: give the connection back here.
            self.database._checkin(conn, broken=True)
            raise
        self._conn = conn
        return self

    def execute(self, query: Union[str, bytes, Composable], params: Any = None) -> psycopg2.extensions.cursor:
        """Run a statement in the transaction; returns the cursor for fetching.

        From a post-commit hook, the statement runs on its own (autocommit)
        on the same connection, before the connection goes back to the pool.
        """
        cursor = self._cursor
        assert cursor is not None, "use the transaction as a context manager"
        if self._committed:
            cursor.execute(query, params)
            return cursor
        if not self._begun:
            # The cursor keeps the last statement's result: the caller's.
            if not isinstance(query, (str, bytes)):
                query = query.as_string(cursor)  # a psycopg2.sql composition
            query = (b"BEGIN;\n" + query) if isinstance(query, bytes) else ("BEGIN;\n" + query)
        try:
            cursor.execute(query, params)
        finally:
            # Open only if the server says so: a statement refused before
            # it ran (a bad parameter, a syntax error) leaves no BEGIN behind.
            self._begun = cursor.connection.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        return cursor

    def execute_at_commit(self, query: str, params: Any = None) -> None:
        """Queue a write to be sent with ``COMMIT``, in the same round trip,
        after every pre-commit hook has run. Its result cannot be read, and
        an error in it rolls the whole transaction back: for the last writes
        of a transaction, which read nothing back (the bus rows)."""
        cursor = self._cursor
        assert cursor is not None and not self._committed, "only inside the transaction"
        self._at_commit.append(cursor.mogrify(query, params))

    def on_precommit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` inside the transaction, just before COMMIT; an error
        in it rolls everything back."""
        self._precommit.append(hook)

    def on_postcommit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once COMMIT has succeeded (never after a rollback),
        while the transaction still holds its connection."""
        self._postcommit.append(hook)

    def _commit(self) -> None:
        # Hooks may register further hooks; run until none is left.
        while self._precommit:
            self._precommit.pop(0)()
        statements = self._at_commit
        cursor = self._cursor
        assert cursor is not None
        if self._begun or statements:
            # One statement per line: a statement ending in a -- comment
            # cannot swallow the COMMIT.
            commit = b"\n;".join([*([] if self._begun else [b"BEGIN"]), *statements, b"COMMIT"])
            try:
                if statements:
                    cursor.execute(commit)
                else:
                    psycopg2.extensions.cursor.execute(cursor, commit)  # a COMMIT alone is not counted
            except psycopg2.errors.InFailedSqlTransaction as exc:
                raise RolledBack(_ROLLED_BACK) from exc
            if cursor.statusmessage != "COMMIT":
                # PostgreSQL answers COMMIT with ROLLBACK, and no error, when
                # a statement failed earlier and the caller carried on.
                raise RolledBack(_ROLLED_BACK)
        self._committed = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        conn = self._conn
        assert conn is not None
        lost = exc_type is not None and _connection_lost(exc, conn)
        broken = lost
        try:
            try:
                if exc_type is None:
                    self._commit()
                elif not conn.closed:
                    _end_open_transaction(conn)
            except BaseException as error:
                if _connection_lost(error, conn):
                    broken = True
                    raise DatabaseUnavailable(str(error).strip()) from error
                try:
                    _end_open_transaction(conn)
                except DISCONNECT_ERRORS:
                    broken = True
                raise
            if self._committed:
                self._run_postcommit()
        finally:
            if self._cursor is not None and not self._cursor.closed:
                self._cursor.close()
            self.database._checkin(conn, broken=broken)
            self._conn = None
        if lost:
            raise DatabaseUnavailable(str(exc).strip()) from exc
        return False

    def _run_postcommit(self) -> None:
        for hook in self._postcommit:
            try:
                hook()
            except Exception:
                # The data is committed; a failed after-effect (a NOTIFY
                # while the server restarts) must not turn into an error
                # for a caller whose write succeeded. Pollers catch up at
                # the dispatcher's next read.
                _logger.exception("post-commit hook failed")


def _end_open_transaction(conn: Any) -> None:
    """Roll back whatever transaction the server still has open on ``conn``
    (a failed statement leaves the block open and aborted)."""
    if conn.closed or conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return
    if conn.autocommit:
        with conn.cursor() as cr:  # not counted, as psycopg2's rollback() is not
            psycopg2.extensions.cursor.execute(cr, "ROLLBACK")
    else:
        conn.rollback()
