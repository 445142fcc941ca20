"""Who is online: polls refresh the caller's presence row, and a status is
derived from how recent that row is.

The rules are Odoo's: a partner who has not polled for 55 s is ``offline``
(a client polls at least every 50 s), one whose user has not touched the
page for 30 min is ``away``, otherwise ``online``. Time always comes in as
a ``now`` argument so that tests check the timers without sleeping.

Every status change is pushed as ``bus/im_status`` ``{"id", "partner_id",
"im_status"}`` on every channel the partner belongs to: changes caused by a
poll (offline → online, away → online...) by that poll, a logout by the
logout, and changes caused by silence (→ offline, → away) by :func:`sweep`,
which :class:`PresenceSweeper` runs periodically. The ``pushed_status``
column records what was last announced; each writer claims a transition by
changing it in the same statement that reads it, so that concurrent polls
and the sweeps of several processes push each change once.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Optional

import psycopg2

from bus.channels import Target
from bus.database import Database, DatabaseUnavailable, Transaction
from bus.models import sendmany

_logger = logging.getLogger(__name__)

DISCONNECTION_TIMER = timedelta(seconds=55)
AWAY_TIMER = timedelta(minutes=30)
#: A presence row younger than this is not rewritten: a client polling in a
#: tight loop (or many tabs) would otherwise write on every poll.
UPDATE_INTERVAL = timedelta(seconds=5)
#: How often a process looks for partners who went silent or idle. The status
#: a client asks for is always exact; this is how late the push may be.
SWEEP_INTERVAL = 10.0
#: How often a process writes the refreshes it queued (see PresenceTracker).
FLUSH_INTERVAL = 1.0
#: A partner this process wrote less than this long ago is known online or
#: away: its refresh, if it changes no status, is queued for the next flush.
#: Well within DISCONNECTION_TIMER, so a queued refresh is never late enough
#: to let the partner go offline.
QUEUE_WITHIN = timedelta(seconds=30)

MAX_INACTIVITY = timedelta(days=1)

IM_STATUS_TYPE = "bus/im_status"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current UTC time as a naive datetime, as the tables store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def im_status(last_poll: Optional[datetime], last_presence: Optional[datetime], now: datetime) -> str:
    if last_poll is None or now - last_poll > DISCONNECTION_TIMER:
        return "offline"
    if last_presence is None or now - last_presence > AWAY_TIMER:
        return "away"
    return "online"


def statuses(tx: Transaction, partner_ids: Iterable[int], now: datetime) -> dict[int, str]:
    """The status of each partner (``offline`` for those who never polled)."""
    ids = list(partner_ids)
    rows = tx.execute(
        "SELECT partner_id, last_poll, last_presence FROM bus_presence WHERE partner_id = ANY(%s)", (ids,)
    ).fetchall()
    found = {partner_id: im_status(last_poll, last_presence, now) for partner_id, last_poll, last_presence in rows}
    return {partner_id: found.get(partner_id, "offline") for partner_id in ids}


def last_presence(inactivity_ms: float, now: datetime) -> datetime:
    """When the user last touched the page, from the inactivity a client reports.

    Beyond a day the exact figure changes no status; capping it keeps the
    datetime arithmetic in range whatever a client reports.
    """
    max_ms = MAX_INACTIVITY / timedelta(milliseconds=1)
    return now - timedelta(milliseconds=min(max(inactivity_ms, 0), max_ms))


def record_poll(tx: Transaction, partner_id: int, presence: datetime, now: datetime) -> Optional[str]:
    """Write a poll into ``tx`` unless the row is fresh; return the new status
    when it changed (and was pushed).

    A fresh row (polled less than :data:`UPDATE_INTERVAL` ago, no newer
    activity) costs two reads and no transaction id: the refreshing UPDATE
    locks only rows that need the write, and the INSERT for a first poll
    stops at the unique index before writing anything. The UPDATE claims the
    status change itself: its locked sub-select reads the ``pushed_status``
    a concurrent poll may just have committed, so of two polls only one sees
    the change. Several tabs report different inactivity; the most recent
    activity wins.
    """
    params = {"pid": partner_id, "now": now, "presence": presence, "interval": UPDATE_INTERVAL,
              "away": now - AWAY_TIMER}
    row = tx.execute(
        "UPDATE bus_presence p SET last_poll = %(now)s,"
        " last_presence = GREATEST(p.last_presence, %(presence)s),"
        " pushed_status = CASE WHEN GREATEST(p.last_presence, %(presence)s) < %(away)s"
        "  THEN 'away' ELSE 'online' END"
        " FROM (SELECT id, pushed_status, last_poll, last_presence FROM bus_presence WHERE partner_id = %(pid)s"
        "  AND (last_poll < %(now)s - %(interval)s OR last_presence < %(presence)s - %(interval)s)"
        "  FOR UPDATE) AS old"
        " WHERE p.id = old.id RETURNING old.pushed_status, old.last_poll, old.last_presence, p.pushed_status",
        params,
    ).fetchone()
    if row is not None:
        pushed, old_poll, old_presence, status = row
        if not _changed(pushed, old_poll, old_presence, status, now):
            return None
    else:
        status = im_status(now, presence, now)
        inserted = tx.execute(
            "INSERT INTO bus_presence (partner_id, last_poll, last_presence, pushed_status)"
            " VALUES (%(pid)s, %(now)s, %(presence)s, %(status)s) ON CONFLICT (partner_id) DO NOTHING RETURNING id",
            {**params, "status": status},
        ).fetchone()
        if inserted is None:
            return None
    push_statuses(tx, {partner_id: status})
    return status


def _changed(pushed: str, old_poll: datetime, old_presence: datetime, status: str, now: datetime) -> bool:
    """Whether a refresh that set a row's status to ``status`` changed it:
    against what was announced (``pushed``), and against what the old row
    meant at ``now``. A change the sweep has not announced yet (silent for
    55 s, but no sweep since) is still a change for whoever asked im_status
    meanwhile."""
    return not (status == pushed and status == im_status(old_poll, old_presence, now))


def update(database: Database, partner_id: int, inactivity_ms: float, now: datetime) -> Optional[str]:
    """Record a poll in a short transaction of its own, so a poll never holds
    a row lock while it waits; see :func:`record_poll`."""
    with database.transaction() as tx:
        return record_poll(tx, partner_id, last_presence(inactivity_ms, now), now)


def refresh_many(tx: Transaction, polls: dict[int, tuple[datetime, datetime]]) -> tuple[dict[int, str], set[int]]:
    """Write many partners' polls (partner -> (when, last presence)) in one
    statement; push the statuses that changed, and return them with the
    partners whose row was there.

    For partners whose row exists (a logout removes it, and a queued refresh
    must not bring it back). Each row's change is claimed as in
    :func:`record_poll`; rows are locked in id order, so that the flushes of
    several processes never deadlock on each other.
    """
    if not polls:
        return {}, set()
    pids = sorted(polls)
    rows = tx.execute(
        "UPDATE bus_presence p SET last_poll = GREATEST(p.last_poll, old.now),"
        " last_presence = GREATEST(p.last_presence, old.presence),"
        " pushed_status = CASE WHEN GREATEST(p.last_presence, old.presence) < old.now - %(away)s"
        "  THEN 'away' ELSE 'online' END"
        " FROM (SELECT b.id, b.pushed_status, b.last_poll, b.last_presence, v.now, v.presence"
        "  FROM bus_presence b JOIN unnest(%(pids)s::integer[], %(nows)s::timestamp[], %(presences)s::timestamp[])"
        "  AS v(pid, now, presence) ON b.partner_id = v.pid ORDER BY b.id FOR UPDATE OF b) AS old"
        " WHERE p.id = old.id"
        " RETURNING p.partner_id, old.pushed_status, old.last_poll, old.last_presence, p.pushed_status, old.now",
        {"pids": pids, "nows": [polls[pid][0] for pid in pids], "presences": [polls[pid][1] for pid in pids],
         "away": AWAY_TIMER},
    ).fetchall()
    changes = {pid: status for pid, pushed, old_poll, old_presence, status, now in rows
               if _changed(pushed, old_poll, old_presence, status, now)}
    push_statuses(tx, changes)
    return changes, {row[0] for row in rows}


#: The rows whose status a sweep changes (checked again once each is locked).
_DUE = ("(({table}.last_poll < %(offline)s AND {table}.pushed_status <> 'offline')"
        " OR ({table}.last_poll >= %(offline)s AND {table}.last_presence < %(away)s"
        " AND {table}.pushed_status = 'online'))")


def sweep(database: Database, now: datetime) -> dict[int, str]:
    """Claim and push the changes nobody's poll causes: partners silent for
    :data:`DISCONNECTION_TIMER` go ``offline``, partners still polling but
    idle for :data:`AWAY_TIMER` go ``away``. Returns what was pushed.

    The UPDATE is the claim: a concurrent sweep waits for the row and then
    finds ``pushed_status`` already changed, and the notifications commit
    with it, so each change is pushed once whatever the number of processes.
    Rows are locked in id order, as :func:`refresh_many` locks them, so that
    a sweep and another process's flush never deadlock.
    """
    offline_before, away_before = now - DISCONNECTION_TIMER, now - AWAY_TIMER
    with database.transaction() as tx:
        rows = tx.execute(
            "UPDATE bus_presence p"
            " SET pushed_status = CASE WHEN p.last_poll < %(offline)s THEN 'offline' ELSE 'away' END"
            " FROM (SELECT id FROM bus_presence WHERE " + _DUE.format(table="bus_presence")
            + " ORDER BY id FOR UPDATE) AS claimed"
            " WHERE p.id = claimed.id AND " + _DUE.format(table="p") + " RETURNING p.partner_id, p.pushed_status",
            {"offline": offline_before, "away": away_before},
        ).fetchall()
        changes = dict(rows)
        push_statuses(tx, changes)
    return changes


def disconnect(tx: Transaction, partner_id: int) -> None:
    """Mark a partner offline at once (logout) and tell their channels."""
    deleted = tx.execute(
        "DELETE FROM bus_presence WHERE partner_id = %s RETURNING pushed_status", (partner_id,)
    ).fetchone()
    if deleted and deleted[0] != "offline":
        push_statuses(tx, {partner_id: "offline"})


def push_statuses(tx: Transaction, changes: dict[int, str]) -> None:
    """Queue ``bus/im_status`` for each changed partner on each of its channels."""
    if not changes:
        return
    rows = tx.execute(
        "SELECT partner_id, channel_id FROM mail_channel_partner WHERE partner_id = ANY(%s)"
        " ORDER BY partner_id, channel_id",
        (sorted(changes),),
    ).fetchall()
    channels: dict[int, list[int]] = {}
    for partner_id, channel_id in rows:
        channels.setdefault(partner_id, []).append(channel_id)
    notifications: list[tuple[Target, str, dict]] = []
    for partner_id, status in sorted(changes.items()):
        payload = {"id": partner_id, "partner_id": partner_id, "im_status": status}
        # The partner's own clients listen to these channels too; their
        # partner channel is only needed when they belong to none (one copy
        # per poller).
        targets = [("mail.channel", cid) for cid in channels.get(partner_id, [])] or [("res.partner", partner_id)]
        notifications.extend((target, IM_STATUS_TYPE, payload) for target in targets)
    sendmany(tx, notifications)


class PresenceTracker:
    """One process's presence writer: remembers what it wrote, so that the
    polls of a partner whose row it refreshed less than
    :data:`UPDATE_INTERVAL` ago (and whose activity is not newer) cost no
    query at all, and queues the refreshes that change no status, to be
    written together by :meth:`flush`.

    1,000 users online make 200 refreshes a second, each a transaction (and
    a commit flushed to disk) of its own in the middle of a poll; queued,
    they are one statement a second. A refresh that changes a status as far
    as this process can tell (a partner it has not written lately, or back
    from away) is written and pushed at once, in the poll; a change only the
    row shows (another process's sweep, or activity going stale) is claimed
    and pushed by the flush, at most a second later.

    Per application, not per module: two apps in one process (tests, or two
    databases) must not skip each other's writes. The memory is only a
    shortcut; another process may have written since, which at worst makes
    this one write again.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._written: dict[int, tuple[datetime, datetime]] = {}
        #: partner -> (poll time, last presence) to be written by flush()
        self._queued: dict[int, tuple[datetime, datetime]] = {}
        self._lock = threading.Lock()

    def poll(self, partner_id: int, inactivity_ms: float, now: datetime) -> Optional[str]:
        """Record a poll; return the new status when it changed (and was pushed)."""
        presence = last_presence(inactivity_ms, now)
        written = self._written.get(partner_id)
        # A clock that went backwards proves nothing about freshness: write.
        if written is not None and timedelta(0) <= now - written[0] < UPDATE_INTERVAL \
                and presence - written[1] <= UPDATE_INTERVAL:
            return None
        if written is not None and timedelta(0) <= now - written[0] < QUEUE_WITHIN:
            latest = max(presence, written[1])
            if im_status(now, latest, now) == im_status(written[0], written[1], now):
                with self._lock:
                    self._queued[partner_id] = (now, latest)
                self._written[partner_id] = (now, latest)
                return None
        with self.database.transaction() as tx:
            changed = record_poll(tx, partner_id, presence, now)
        self._written[partner_id] = (now, max(presence, written[1]) if written else presence)
        return changed

    def flush(self) -> dict[int, str]:
        """Write the queued refreshes in one statement; returns the statuses
        that changed meanwhile (pushed). On a database error they stay
        queued for the next flush, behind any newer poll of the same partner.
        A partner whose row is gone (logged out through another process) is
        forgotten: its next poll writes the row anew, as a first poll."""
        with self._lock:
            queued, self._queued = self._queued, {}
        try:
            with self.database.transaction() as tx:
                changes, found = refresh_many(tx, queued)
        except Exception:
            with self._lock:
                self._queued = {**queued, **self._queued}
            raise
        for partner_id in queued.keys() - found:
            self._written.pop(partner_id, None)
        return changes

    def forget(self, partner_id: int) -> None:
        """The row is gone (logout): the next poll must write it again."""
        self._written.pop(partner_id, None)
        with self._lock:
            self._queued.pop(partner_id, None)

    def prune(self, now: datetime) -> None:
        """Drop what no longer saves a write or a transaction, so the memory
        holds only the partners polling right now."""
        for partner_id, (written_at, _) in list(self._written.items()):
            if not timedelta(0) <= now - written_at < QUEUE_WITHIN:
                self._written.pop(partner_id, None)


class PresenceSweeper:
    """Runs :func:`sweep` every ``interval`` seconds in a daemon thread (a
    greenlet once gevent has patched the process), from the first poll until
    :meth:`stop`, and writes the tracker's queued refreshes every
    :data:`FLUSH_INTERVAL` (or ``interval``, if shorter) and once more when
    it stops. Each process of a deployment runs one; the claim in
    :func:`sweep` keeps them from pushing twice."""

    def __init__(self, database: Database, tracker: PresenceTracker, clock: Clock,
                 interval: float = SWEEP_INTERVAL) -> None:
        self.database = database
        self.tracker = tracker
        self.clock = clock
        self.interval = interval
        self.runs = 0  # completed sweeps, for tests
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Start sweeping; cheap to call on every poll."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                thread = threading.Thread(target=self._run, name="imbus-presence-sweeper", daemon=True)
                thread.start()
                self._thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop for good (also before the first poll, so that a late poll
        does not restart it after the app was closed)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the sweeping thread is alive (it starts with the first poll)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.interval
        while not self._stop.wait(min(self.interval, FLUSH_INTERVAL)):
            self._flush()
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.interval
        self._flush()  # what the last polls queued

    def _flush(self) -> None:
        # What a failed flush held stays queued for the next one.
        _survive(self.tracker.flush, "queued presence refreshes not written")

    def _sweep(self) -> None:
        now = self.clock()
        _survive(lambda: sweep(self.database, now), "presence sweep failed")
        self.tracker.prune(now)
        self.runs += 1


def _survive(work: Callable[[], object], failure: str) -> None:
    """Run one round of the sweeper's ``work``; the next round retries. A
    restarting database is a warning, anything else an error, and neither
    ends the thread: the polls queue on for its flushes."""
    try:
        work()
    except (DatabaseUnavailable, psycopg2.Error):
        _logger.warning(failure, exc_info=True)
    except Exception:
        _logger.exception(failure)
