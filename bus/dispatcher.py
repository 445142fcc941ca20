"""Reads and feeds: one dispatcher per process LISTENs on PostgreSQL, reads
the new rows and has the hub wake the polls of the channels they are on.

On a NOTIFY the dispatcher reads the new rows *once* for the whole process,
advances the no-gap watermark, keeps the final rows in a small in-memory
window, and tells the hub (``bus/hub.py``, where polls wait) which channels
have news. Woken pollers answer from memory, so the number of queries per
notification does not grow with the number of pollers (Odoo 15 runs one
query per woken poller). While commits flood in, it stops listening and
reads on a short timer instead (see BUSY_NOTIFIES).

The same code runs as a daemon thread or, once gevent has monkey-patched the
process, as a greenlet: it only uses ``threading``, ``select`` and ``os``,
which gevent makes cooperative, and psycopg2 made cooperative by psycogreen.
"""
from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

import psycopg2

from . import models
from .channels import NOTIFY_CHANNEL, OUTDATED_TYPE, Row, encode_entry, encode_message, parse_notify_payload
from .database import DISCONNECT_ERRORS, CountingCursor, Database, DatabaseUnavailable
from .herd import HERD, HerdPacer
from .hub import DEADLINE_TICK, Audience, Hub, Interrupt
from .watermark import Watermark
from .window import Window

_logger = logging.getLogger(__name__)

#: How many final rows a process keeps in memory for pollers to read.
CACHE_SIZE = 20_000
#: Rows fetched per shared read; a backlog is read in several.
READ_BATCH = 5_000
#: How soon a held-back gap is looked at again when no NOTIFY comes first
#: (its writer may have rolled back, which announces nothing); the interval
#: doubles while the same gap stays open.
GAP_RECHECK = 0.02
GAP_RECHECK_MAX = 0.5
#: A gap that has held the watermark at one position this long has the
#: reader ask, before each further read, which transactions hold the bus
#: writers' lock, and wait for those alone (see bus/watermark.py). Most gaps
#: close within milliseconds as their writers commit, and a look at pg_locks
#: briefly takes every lock partition of the server.
ASK_WRITERS_AFTER = 0.1
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
#: A shared read answering this many notifications means commits come
#: faster than notifications are worth handling (PostgreSQL wakes the
#: listening backend for every one, and it forwards each): the dispatcher
#: then stops listening and reads every BUSY_READ_INTERVAL seconds, until a
#: read finds fewer than QUIET_ROWS new rows (final or held back behind a
#: gap), when it listens again. Counted in notifications, not rows: one post
#: of many rows is one commit.
BUSY_NOTIFIES = 16
QUIET_ROWS = 4
BUSY_READ_INTERVAL = 0.005
#: How the listening connection shows in ``pg_stat_activity``.
APPLICATION_NAME = "imbus-dispatcher"


class Dispatcher:
    """The process's single listener and reader; it feeds the hub, where
    the polls wait."""

    def __init__(
        self,
        database: Database,
        *,
        retention: float = 100.0,
        gc_interval: float = 30.0,
        hold_back_gaps: bool = True,
        shared_reads: bool = True,
        cache_size: int = CACHE_SIZE,
        herd: Optional[int] = HERD,
    ) -> None:
        self.database = database
        self.retention = retention
        self.gc_interval = gc_interval
        self.shared_reads = shared_reads
        self.watermark = Watermark(hold_back_gaps=hold_back_gaps)
        self.gc_floor = 0
        # The newest final rows, per channel, so an answer is a slice of its
        # channel's log. Rows are added, then ``position`` is published;
        # readers take ``position`` first, and so never read past it.
        self.window = Window(cache_size)
        #: The last id this process has read and taken as final.
        self.position = 0
        #: Where the polls wait: fed by this dispatcher, it never calls back.
        self.hub = Hub()
        #: Holds reads back while a herd of woken polls comes back (bus/herd.py).
        self.pacer = HerdPacer(lambda: self.hub.joins, herd=herd)
        self._lock = threading.Lock()  # guards starting, stopping and the pipe
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._stopping = False
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._pipe_closed = False
        self.reads = 0  # shared reads done, for tests and benchmarks
        #: This process's row among the readers garbage collection waits
        #: for (see models.register_reader); None in Odoo 15 mode.
        self._reader: Optional[int] = None
        #: (position, since when) while a gap holds the watermark there.
        self._held_since: Optional[tuple[int, float]] = None
        #: False while commits come so fast that the dispatcher reads on a
        #: timer instead of listening (see BUSY_NOTIFIES).
        self.listening = True
        self.connected = threading.Event()
        self._observers: list[Callable[[Sequence[Row]], None]] = []

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start listening; safe to call on every poll (the first one starts it)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stopping:
                self.hub.start()
                thread = threading.Thread(target=self._run, name="imbus-dispatcher", daemon=True)
                thread.start()
                self._thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        """Release every parked poll and close the listening connection."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            # Under the lock, which the dispatcher also takes to close the
            # pipe once it has seen ``_stopping``: the pipe is open here.
            if not self._pipe_closed:
                os.write(self._wakeup_w, b"x")
        self.hub.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._close_pipe()

    def _close_pipe(self) -> None:
        with self._lock:
            if self._pipe_closed:
                return
            self._pipe_closed = True
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)

    def observe(self, callback: Callable[[Sequence[Row]], None]) -> None:
        """Hand ``callback`` every shared read's final rows, in id order,
        before any poll can see them: before the position moves past them and
        before their waiters are woken. For state derived from the rows that
        polls rely on (the chat's subscription cache). It runs on the
        dispatcher, so it must be quick; the rows are not read again, so it
        must deal with its own failures (an error is logged and the bus goes
        on)."""
        self._observers.append(callback)

    # -- polling ------------------------------------------------------------

    def poll(
        self,
        channels: Iterable[str],
        last: int,
        timeout: float,
        *,
        peek: bool = False,
        interrupt: Optional[Interrupt] = None,
    ) -> Sequence[bytes]:
        """Answer a long-poll: the entries after ``last`` on ``channels``,
        waiting up to ``timeout`` seconds for some when there are none yet.

        A poll that may wait joins its audience *before* the catch-up read,
        so a row that becomes final between the two wakes it instead of being
        missed. The entries returned may be shared with other polls: do not
        modify them. Setting ``interrupt`` makes a parked poll answer at once
        with what it has (nothing).
        """
        if self._stopping:
            # Shutting down: nothing will wake this poll, and a dispatcher
            # that never started would make it wait for a connection.
            return []
        self.start()
        if not self._ready.wait(5.0):
            raise DatabaseUnavailable("the bus is not connected to the database yet")
        channels = frozenset(channels)
        hub = self.hub
        if self.shared_reads and 0 < last < self.position and last >= self.window.floor and not self._stopping:
            # Behind the process's position, within the window, a poll may
            # have news already: then it answers from memory without joining
            # an audience, which costs three lock round trips, and under load
            # most polls are such polls.
            entries = self._collect(channels, last, hub.audience(channels))
            if entries:
                return entries
        deadline = time.monotonic() + timeout
        tick = math.ceil(deadline / DEADLINE_TICK)
        audience = hub.join(channels)
        channels = audience.channels  # the caller's copy is not kept while parked
        try:
            event = hub.event(audience, tick)
            entries, last = self._catch_up(audience, last, timeout)
            while not entries and not peek and not self._stopping and time.monotonic() < deadline:
                if interrupt is not None and not interrupt.park(hub, audience, tick, event):
                    break
                event.wait()
                event = hub.event(audience, tick)
                entries, last = self._catch_up(audience, last, timeout)
            return [] if self._stopping else entries
        finally:
            hub.leave(audience)

    def _catch_up(self, audience: Audience, last: int, timeout: float) -> tuple[Sequence[bytes], int]:
        """The entries after ``last``, and the ``last`` to wait from when
        there are none."""
        if last > 0:
            return self._collect(audience.channels, last, audience), last
        # A client's first poll: only what is younger than one poll cycle.
        # If that is nothing, it then follows this process's position, which
        # is answered from memory.
        upto = self.position if self.shared_reads else None
        rows = models.fetch(self.database, sorted(audience.channels), 0, upto, younger_than=timeout)
        return [encode_entry(i, m) for i, m in rows], upto or 0

    def _collect(self, channels: frozenset[str], last: int, audience: Optional[Audience]) -> Sequence[bytes]:
        """The entries after ``last``; shared with the polls of ``audience``."""
        prefix: list[bytes] = []
        if last < self.gc_floor:
            prefix.append(encode_entry(self.gc_floor, encode_message(OUTDATED_TYPE, {})))
            last = self.gc_floor
        entries = None
        if self.shared_reads:
            position = self.position
            # Final rows never change, so an answer for (last, position) is
            # the same for every poll of the audience.
            answer = audience.answer if audience is not None else None
            if not prefix and answer is not None and answer[0] == last and answer[1] == position:
                return answer[2]
            entries = self.window.answer(channels, last, position)
        if entries is None:  # Odoo's way, or rows after ``last`` may have left the window
            return prefix + [encode_entry(i, m) for i, m in self._fetch(channels, last)]
        if prefix:
            return prefix + list(entries)
        if audience is not None:
            audience.answer = (last, position, entries)
        return entries

    def _fetch(self, channels: frozenset[str], last: int) -> list[tuple[int, str]]:
        upto = self.position if self.shared_reads else None
        return models.fetch(self.database, sorted(channels), last, upto)

    @property
    def waiter_count(self) -> int:
        """How many polls are parked or being answered."""
        return self.hub.waiter_count

    # -- the listening loop --------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._close_pipe()

    def _serve(self) -> None:
        delay = RECONNECT_FIRST
        while not self._stopping:
            conn = None
            try:
                conn = self.database.connect(autocommit=True, keepalive=True, application_name=APPLICATION_NAME)
                # The shared reads run on the listening connection too: no
                # pool checkout, and their statement is prepared once.
                cr = conn.cursor(cursor_factory=CountingCursor)
                cr.execute("LISTEN " + NOTIFY_CHANNEL)
                if self.position == 0:
                    # Ids at or below the GC floor are gone or outdated
                    # anyway; starting there spares the first read a gap.
                    self.position = self.watermark.position = models.gc_floor(self.database)
                    self.window.floor = self.position
                if self.shared_reads:
                    # While this connection lives, no process collects a
                    # row this one has not taken as final.
                    self._reader = models.register_reader(cr, self.watermark.position)
                # Anything committed while nobody listened is read now, and
                # its waiters woken, instead of waiting for the next NOTIFY.
                self._refresh(cr, everything=True)
                self.connected.set()
                self._ready.set()
                delay = RECONNECT_FIRST
                self._listen(conn, cr)
            except (DatabaseUnavailable, *DISCONNECT_ERRORS) as exc:
                if self._stopping:
                    break
                self.connected.clear()
                _logger.warning("bus listener lost the database (%s); retrying in %.1fs", str(exc).strip(), delay)
                time.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            except Exception:
                _logger.exception("bus dispatcher failed; restarting it")
                self.connected.clear()
                time.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                if conn is not None and not conn.closed:
                    conn.close()

    def _listen(self, conn: psycopg2.extensions.connection, cr: psycopg2.extensions.cursor) -> None:
        # poll(), not select(): next to thousands of parked polls the
        # listener's socket number is above 1023, which select() refuses.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        poller.register(self._wakeup_r, select.POLLIN)
        next_gc = time.monotonic()
        recheck = GAP_RECHECK
        self.listening = True
        # While a herd holds the next read (bus/herd.py): until when, and the
        # notifications announced meanwhile.
        held_until: Optional[float] = None
        deferred = 0
        while not self._stopping:
            now = time.monotonic()
            refresh = False
            if now >= next_gc:
                position = self.watermark.position if self._reader is not None else None
                self.gc_floor = models.collect_garbage(self.database, self.retention, position, self._reader)
                next_gc = now + self.gc_interval
                # Also a safety net: rows whose NOTIFY was lost (a writer that
                # died right after COMMIT) are read at the latest now.
                refresh = True
            wait = next_gc - now
            if self.watermark.blocked:
                wait = min(wait, recheck)
            if not self.listening:
                wait = min(wait, BUSY_READ_INTERVAL)
            if held_until is not None:
                wait = min(wait, held_until - now)
            if not refresh:
                # Notifications that came in with the answer to a read are
                # already taken off the socket: do not sleep on them.
                if not conn.notifies:
                    readable = {fd for fd, _ in poller.poll(max(wait, 0) * 1000)}
                    if self._stopping:
                        return
                    if conn.fileno() in readable:
                        conn.poll()
                refresh = held_until is not None or self.watermark.blocked or bool(conn.notifies) \
                    or not self.listening
            announced = len(conn.notifies)
            channels: list[str] = []
            if conn.notifies and not self.shared_reads:
                for notification in conn.notifies:
                    channels.extend(parse_notify_payload(notification.payload))
            conn.notifies.clear()
            if refresh and self.shared_reads:
                now = time.monotonic()
                # Reading on a timer means a flood: rows keep coming.
                hold = self.pacer.hold(now, rows=bool(announced) or not self.listening)
                if hold > 0:
                    held_until, deferred = now + hold, deferred + announced
                    continue
                held_until, announced, deferred = None, announced + deferred, 0
            if refresh:
                was_blocked_at = self.watermark.position if self.watermark.blocked else None
                rows = self._refresh(cr, channels)
                held_at_same_gap = self.watermark.blocked and self.watermark.position == was_blocked_at
                recheck = min(recheck * 2, GAP_RECHECK_MAX) if held_at_same_gap else GAP_RECHECK
                if self.shared_reads:  # Odoo's way needs every notification's channels
                    self._pace(cr, announced, rows)

    def _pace(self, cr: psycopg2.extensions.cursor, announced: int, rows: int) -> None:
        """Listen while commits are few; read on a short timer while they
        come faster than one read's worth at a time."""
        if self.listening and announced >= BUSY_NOTIFIES:
            cr.execute("UNLISTEN " + NOTIFY_CHANNEL)
            self.listening = False
        elif not self.listening and rows < QUIET_ROWS:
            cr.execute("LISTEN " + NOTIFY_CHANNEL)
            self.listening = True
            # What was committed since that read announced nothing here.
            self._refresh(cr)

    def _refresh(self, cr: psycopg2.extensions.cursor, channels: Sequence[str] = (), *,
                 everything: bool = False) -> int:
        """One shared read for the whole process, then wake whom it concerns;
        returns how many rows past the position it found, final or not."""
        if not self.shared_reads:
            # Odoo 15's way: wake the named channels (or all, after an outage)
            # and let every poller query the database for itself.
            self.hub.wake(self.hub.channels() if everything else channels)
            return 0
        touched: set[str] = set()
        found = 0
        writers = self._writers(cr)
        while True:
            result = models.read_after(cr, self.watermark.position, READ_BATCH)
            self.reads += 1
            found += len(result.rows)
            self.gc_floor = max(self.gc_floor, result.gc_floor)
            # Asked before this read, so good for it alone: a later read may
            # see gaps first seen in this one.
            writing = None if writers is None else result.running_among(writers)
            writers = None
            final = self.watermark.advance(result.rows, result.running, result.xmax,
                                           lambda: models.draw_transaction_id(cr), writing)
            if final:
                self._publish(final)
                touched.update(channel for _, channel, _ in final)
            if len(result.rows) < READ_BATCH or not final:
                break
        self._track_hold()
        if touched:
            # Once per refresh, however many reads it took: the hub is told
            # only which channels have news, never the rows.
            self.pacer.woke(self.hub.wake(touched), time.monotonic())
        return found

    def _writers(self, cr: psycopg2.extensions.cursor) -> Optional[frozenset[int]]:
        """Who holds the bus writers' lock now, or None (not asked) unless a
        gap has held the watermark for ASK_WRITERS_AFTER already."""
        held = self._held_since
        if held is None or held[0] != self.watermark.position or time.monotonic() - held[1] < ASK_WRITERS_AFTER:
            return None
        return models.bus_writers(cr)

    def _track_hold(self) -> None:
        """Note since when a gap holds the watermark at its position."""
        if not self.watermark.blocked:
            self._held_since = None
        elif self._held_since is None or self._held_since[0] != self.watermark.position:
            self._held_since = (self.watermark.position, time.monotonic())

    def _publish(self, final: Sequence[Row]) -> None:
        """Make one read's final rows readable by polls: into the window,
        then the position moves past them. Every final row passes here once,
        in id order, before the hub wakes any poll for it; the observers see
        them first."""
        for callback in self._observers:
            try:
                callback(final)
            except Exception:
                _logger.exception("bus row observer failed")
        self.window.add(final)
        self.position = final[-1][0]
