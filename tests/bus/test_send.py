"""The send path: rows in the caller's transaction, NOTIFY only after COMMIT."""
import json
import select
import threading
import time

import psycopg2
import pytest

from bus import channel_with_db, schema, sendmany, sendone
from bus.channels import NOTIFY_PAYLOAD_LIMIT, split_notify_payloads
from bus.database import Database, DatabaseUnavailable, RolledBack, execute_prepared


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    schema.install(database)
    yield database
    database.close()


@pytest.fixture
def listener(database_url):
    """A plain psycopg2 connection LISTENing on the bus channel."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    conn.cursor().execute("LISTEN imbus")
    yield conn
    conn.close()


def notifications(conn, wait: float) -> list[str]:
    """Payloads received within ``wait`` seconds (stops early once some arrived
    and the line went quiet)."""
    deadline = time.monotonic() + wait
    payloads = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return payloads
        if select.select([conn], [], [], min(remaining, 0.2 if payloads else remaining)) == ([], [], []):
            if payloads:
                return payloads
            continue
        conn.poll()
        payloads.extend(n.payload for n in conn.notifies)
        conn.notifies.clear()


def rows(db):
    with db.cursor() as cr:
        cr.execute("SELECT channel, message FROM bus_bus ORDER BY id")
        return cr.fetchall()


def test_channels_are_qualified_by_database_like_odoo():
    assert channel_with_db("db", "general") == '["db","general"]'
    assert channel_with_db("db", ("res.partner", 7)) == '["db","res.partner",7]'
    for bad in (7, None, ("res.partner", "7"), ("res.partner", True), ("a", 1, 2)):
        with pytest.raises(TypeError):
            channel_with_db("db", bad)


def test_rows_are_written_as_compact_json(db):
    with db.transaction() as tx:
        sendmany(tx, [("general", "chat/hello", {"text": "héllo"}), (("res.partner", 3), "ping", [1, 2])])
    dbname = db.dbname
    assert rows(db) == [
        (f'["{dbname}","general"]', '{"type":"chat/hello","payload":{"text":"héllo"}}'),
        (f'["{dbname}","res.partner",3]', '{"type":"ping","payload":[1,2]}'),
    ]


def test_create_date_is_utc(db):
    with db.transaction() as tx:
        sendone(tx, "general", "t", {})
    with db.cursor() as cr:
        cr.execute("SELECT extract(epoch FROM (now() AT TIME ZONE 'UTC') - create_date) FROM bus_bus")
        assert abs(cr.fetchone()[0]) < 60


def test_notify_waits_for_commit_and_names_the_channels(db, listener):
    with db.transaction() as tx:
        sendone(tx, "general", "t", {"n": 1})
        sendone(tx, ("res.partner", 3), "t", {"n": 2})
        sendone(tx, "general", "t", {"n": 3})
        tx.on_precommit(lambda: None)
        # Still inside the transaction: nothing announced yet.
        assert notifications(listener, 0.3) == []
    payloads = notifications(listener, 2)
    assert len(payloads) == 1
    dbname = db.dbname
    assert json.loads(payloads[0]) == [[dbname, "general"], [dbname, "res.partner", 3]]


def test_rows_are_visible_when_the_notify_arrives(db, listener, database_url):
    reader = psycopg2.connect(database_url)
    reader.autocommit = True
    with db.transaction() as tx:
        sendone(tx, "general", "t", {})
    assert notifications(listener, 2)
    with reader.cursor() as cr:
        cr.execute("SELECT count(*) FROM bus_bus")
        assert cr.fetchone()[0] == 1
    reader.close()


def test_rollback_writes_nothing_and_announces_nothing(db, listener):
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            sendone(tx, "general", "t", {})
            raise RuntimeError("the caller's work failed")
    assert rows(db) == []
    assert notifications(listener, 0.5) == []


def test_failure_in_a_later_precommit_hook_rolls_back_the_bus_rows(db, listener):
    def fail():
        raise RuntimeError("constraint checked at the end")

    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            sendone(tx, "general", "t", {})
            tx.on_precommit(fail)
    assert rows(db) == []
    assert notifications(listener, 0.5) == []


def test_thousand_channels_are_announced_in_payloads_postgres_accepts(db, listener):
    targets = [f"channel-with-a-longish-name-{i:04d}" for i in range(1000)]
    with db.transaction() as tx:
        sendmany(tx, [(t, "t", {}) for t in targets])
    payloads = notifications(listener, 3)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    announced = [c[1] for p in payloads for c in json.loads(p)]
    assert announced == targets


def test_split_respects_the_byte_limit_with_multibyte_names():
    channels = [json.dumps(["db", "é" * 50 + str(i)], ensure_ascii=False, separators=(",", ":")) for i in range(500)]
    payloads = list(split_notify_payloads(channels))
    assert all(len(p.encode("utf-8")) <= NOTIFY_PAYLOAD_LIMIT for p in payloads)
    assert [c for p in payloads for c in json.loads(p)] == [json.loads(c) for c in channels]


def test_a_post_is_one_statement_to_write_and_one_to_announce(db):
    for notifications in ([("general", "t", {})], [("general", "t", {}), (("res.partner", 3), "t", {})]):
        before = db.statements.value
        with db.transaction() as tx:
            sendmany(tx, notifications)
        assert db.statements.value - before == 2


def test_a_post_waits_for_a_free_connection_or_gives_up_cleanly(db, database_url):
    single = Database(database_url, maxconn=1)
    single.checkout_timeout = 0.3  # 30 s in production
    posted = threading.Event()

    def post():
        with single.transaction() as tx:
            sendone(tx, "general", "t", {})
        posted.set()

    try:
        with single.transaction():
            with pytest.raises(DatabaseUnavailable):
                post()
            single.checkout_timeout = 5
            writer = threading.Thread(target=post)
            writer.start()
            assert not posted.wait(0.3), "a second connection was opened past maxconn"
        assert posted.wait(5)
        writer.join(5)
        assert len(rows(db)) == 1
    finally:
        single.close()


def test_a_connection_goes_back_to_the_pool_without_its_transaction(db, database_url):
    single = Database(database_url, maxconn=1)
    try:
        with pytest.raises(RuntimeError):
            with single.cursor(autocommit=False) as cr:
                cr.execute("INSERT INTO bus_bus (channel, message) VALUES ('c', 'm')")
                raise RuntimeError("the caller's work failed")
        with single.cursor() as cr:  # the same connection: the pool holds one
            cr.execute("SELECT count(*) FROM bus_bus")
            assert cr.fetchone()[0] == 0
    finally:
        single.close()


def test_a_prepared_statement_is_prepared_again_after_a_deallocate(database_url):
    """A pooler's DISCARD ALL (or an administrator) can drop a connection's
    prepared statements behind its back: the next use prepares it again."""
    single = Database(database_url, maxconn=1)
    try:
        for value, meddle in ((1, None), (2, "DEALLOCATE ALL"), (3, None)):
            with single.cursor() as cr:
                if meddle:
                    cr.execute(meddle)
                execute_prepared(cr, "imbus_test_echo", "SELECT $1::integer", (value,))
                assert cr.fetchone()[0] == value
    finally:
        single.close()


def test_a_deadlock_is_the_callers_error_not_an_outage(db):
    """psycopg2 raises a deadlock as an OperationalError, like a lost
    connection; it must reach the caller as itself, and the connection stays
    usable."""
    with pytest.raises(psycopg2.errors.DeadlockDetected):
        with db.transaction() as tx:
            tx.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'deadlock_detected'; END $$")
    with pytest.raises(psycopg2.errors.DeadlockDetected):
        with db.cursor() as cr:
            cr.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'deadlock_detected'; END $$")
    with db.cursor() as cr:
        cr.execute("SELECT 1")
        assert cr.fetchone()[0] == 1


# -- the transaction's round trips: BEGIN with the first statement, the bus
# -- rows with COMMIT, the NOTIFY on the same connection afterwards

def test_a_failed_statement_rolls_back_the_caller_work_and_frees_the_connection(database_url):
    single = Database(database_url, maxconn=1)
    schema.install(single)
    try:
        with pytest.raises(psycopg2.errors.DivisionByZero):
            with single.transaction() as tx:
                tx.execute("INSERT INTO bus_bus (channel, message) VALUES ('c', '{}')")
                sendone(tx, "general", "t", {})
                tx.execute("SELECT 1 / 0")
        with single.transaction() as tx:  # the same connection: the pool holds one
            assert tx.execute("SELECT count(*) FROM bus_bus").fetchone()[0] == 0
            assert tx.execute("SELECT 1").fetchone()[0] == 1
    finally:
        single.close()


def test_a_failure_in_the_statements_sent_with_commit_rolls_everything_back(db, listener):
    with pytest.raises(psycopg2.errors.RaiseException):
        with db.transaction() as tx:
            tx.execute("INSERT INTO bus_bus (channel, message) VALUES ('c', '{}')")
            sendone(tx, "general", "t", {})
            tx.on_precommit(lambda: tx.execute_at_commit("DO $$BEGIN RAISE EXCEPTION 'late failure'; END$$"))
    assert rows(db) == []
    assert notifications(listener, 0.5) == []
    with db.transaction() as tx:  # the pool's connections are all usable
        sendone(tx, "general", "t", {})
    assert len(rows(db)) == 1


def test_statements_sent_with_commit_run_after_the_pre_commit_hooks_in_order(db):
    with db.transaction() as tx:
        tx.execute_at_commit("INSERT INTO bus_bus (channel, message) VALUES (%s, %s)", ("first", "{}"))
        tx.on_precommit(lambda: tx.execute("INSERT INTO bus_bus (channel, message) VALUES ('hook', '{}')"))
        tx.execute_at_commit("INSERT INTO bus_bus (channel, message) VALUES ('50%% off', '{}')", ())
        tx.execute_at_commit("INSERT INTO bus_bus (channel, message) VALUES ('100% sure', '{}')")
    assert [channel for channel, _ in rows(db)] == ["hook", "first", "50% off", "100% sure"]


def test_post_commit_statements_see_the_commit_and_run_outside_it(db):
    seen = []

    def after():
        seen.append(tx.execute("SELECT count(*), pg_current_xact_id_if_assigned() FROM bus_bus").fetchone())

    with db.transaction() as tx:
        sendone(tx, "general", "t", {})
        tx.on_postcommit(after)
    assert seen == [(1, None)]  # the row is there, and no transaction of ours is open


def test_no_transaction_leaves_its_connection_idle_in_transaction(db, database_url):
    """BEGIN and COMMIT are sent by hand, so check from the server's side that
    every way out of a transaction closes it: committed, composed first
    statement, nothing sent, rolled back."""
    observer = psycopg2.connect(database_url)
    observer.autocommit = True

    def state(pid):
        with observer.cursor() as cr:
            cr.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cr.fetchone()[0]

    pids = []
    with db.transaction() as tx:
        composed = psycopg2.sql.SQL("SELECT pg_backend_pid(), {}").format(psycopg2.sql.Literal(7))
        pid, seven = tx.execute(composed).fetchone()
        assert seven == 7 and state(pid) == "idle in transaction"
        pids.append(pid)
    with db.transaction() as tx:
        tx.on_postcommit(lambda: pids.append(tx.execute("SELECT pg_backend_pid()").fetchone()[0]))
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            pids.append(tx.execute("SELECT pg_backend_pid()").fetchone()[0])
            raise RuntimeError("the caller's work failed")
    assert [state(pid) for pid in pids] == ["idle"] * 3
    observer.close()


def test_a_statement_refused_before_it_ran_leaves_the_transaction_whole(db):
    """The first statement carries the BEGIN: if it is refused before it
    runs (a syntax error, a missing parameter) and the caller goes on, what
    follows is still one transaction, rolled back as one."""
    for refused in (lambda tx: tx.execute("SELEC 1"), lambda tx: tx.execute("SELECT %s, %s", (1,))):
        with pytest.raises(RuntimeError):
            with db.transaction() as tx:
                with pytest.raises((psycopg2.Error, IndexError, TypeError)):
                    refused(tx)
                tx.execute("INSERT INTO bus_bus (channel, message) VALUES ('c', '{}')")
                raise RuntimeError("the caller's work failed")
        assert rows(db) == []


def test_a_commit_after_a_swallowed_error_says_it_rolled_back(db, listener):
    ran = []
    with pytest.raises(RolledBack):
        with db.transaction() as tx:
            tx.execute("INSERT INTO bus_bus (channel, message) VALUES ('c', '{}')")
            with pytest.raises(psycopg2.errors.DivisionByZero):
                tx.execute("SELECT 1 / 0")
            sendone(tx, "general", "t", {})
            tx.on_postcommit(lambda: ran.append(True))
    assert rows(db) == [] and ran == []
    assert notifications(listener, 0.5) == []


def test_a_statement_sent_with_commit_may_end_in_a_comment(db):
    with db.transaction() as tx:
        tx.execute_at_commit("INSERT INTO bus_bus (channel, message) VALUES ('c', '{}') -- no newline after me")
    assert rows(db) == [("c", "{}")]


def test_a_transaction_runs_once(db):
    tx = db.transaction()
    with tx:
        sendone(tx, "general", "t", {})
    with pytest.raises(RuntimeError):
        with tx:
            pass
    assert len(rows(db)) == 1
