"""Waits and wakes: one dispatcher per process LISTENs on PostgreSQL and wakes
the long-polls waiting on the channels that received notifications.

On a NOTIFY the dispatcher reads the new rows *once* for the whole process,
advances the no-gap watermark, keeps the final rows in a small in-memory
window, and wakes only the waiters of the channels those rows are on. Woken
pollers answer from memory, so the number of queries per notification does
not grow with the number of pollers (Odoo 15 runs one query per woken poller).

The same code runs as a daemon thread or, once gevent has monkey-patched the
process, as a greenlet: it only uses ``threading``, ``select`` and ``os``,
which gevent makes cooperative, and psycopg2 made cooperative by psycogreen.
"""
from __future__ import annotations

import bisect
import logging
import os
import select
import threading
import time
from typing import Iterable, Optional, Sequence

import psycopg2

from . import models
from .channels import NOTIFY_CHANNEL, OUTDATED_TYPE, Row, encode_entry, encode_message, parse_notify_payload
from .database import DISCONNECT_ERRORS, Database, DatabaseUnavailable
from .watermark import Watermark

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
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0


class Waiter:
    """One parked poll: the channels it listens to and the event that wakes it."""

    __slots__ = ("channels", "event")

    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        self.event = threading.Event()


class Dispatcher:
    """The process's single listener, reader and waiter registry."""

    def __init__(
        self,
        database: Database,
        *,
        retention: float = 100.0,
        gc_interval: float = 30.0,
        hold_back_gaps: bool = True,
        shared_reads: bool = True,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.database = database
        self.retention = retention
        self.gc_interval = gc_interval
        self.shared_reads = shared_reads
        self.cache_size = cache_size
        self.watermark = Watermark(hold_back_gaps=hold_back_gaps)
        self.gc_floor = 0
        # Final rows in id order: (id, channel, entry). Appended in place but
        # trimmed by replacement, so a reader can keep using the list it got.
        # Writers append rows, then publish ``position``; trimming publishes
        # the new floor, then the new list. Readers take ``position``, then
        # the list, then the floor, and so never miss a row.
        self._cache: list[tuple[int, str, str]] = []
        self._cache_floor = 0  # every final row with a larger id is cached
        #: The last id this process has read and taken as final.
        self.position = 0
        self._waiters: dict[str, set[Waiter]] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._stopping = False
        self._wakeup_r, self._wakeup_w = os.pipe()
        self.reads = 0  # shared reads done, for tests and benchmarks
        self.connected = threading.Event()

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start listening; safe to call on every poll (the first one starts it)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stopping:
                thread = threading.Thread(target=self._run, name="imbus-dispatcher", daemon=True)
                thread.start()
                self._thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        """Release every parked poll and close the listening connection."""
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wakeup_w, b"x")
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for waiter in waiters:
            waiter.event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._close_pipe()

    def _close_pipe(self) -> None:
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    # -- polling ------------------------------------------------------------

    def poll(
        self,
        channels: Iterable[str],
        last: int,
        timeout: float,
        *,
        peek: bool = False,
    ) -> list[str]:
        """Answer a long-poll: the entries after ``last`` on ``channels``,
        waiting up to ``timeout`` seconds for some when there are none yet.

        The waiter is registered *before* the catch-up read, so a row that
        becomes final between the two wakes it instead of being missed.
        """
        self.start()
        if not self._ready.wait(5.0):
            raise DatabaseUnavailable("the bus is not connected to the database yet")
        deadline = time.monotonic() + timeout
        waiter = Waiter(frozenset(channels))
        self._register(waiter)
        try:
            entries, last = self._catch_up(waiter.channels, last, timeout)
            while not entries and not peek and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not waiter.event.wait(remaining):
                    break
                # Cleared before reading, so a wake-up during the read is kept.
                waiter.event.clear()
                entries, last = self._catch_up(waiter.channels, last, timeout)
            return [] if self._stopping else entries
        finally:
            self._unregister(waiter)

    def _catch_up(self, channels: frozenset[str], last: int, timeout: float) -> tuple[list[str], int]:
        """The entries after ``last``, and the ``last`` to wait from when
        there are none."""
        if last > 0:
            return self._collect(channels, last), last
        # A client's first poll: only what is younger than one poll cycle.
        # If that is nothing, it then follows this process's position, which
        # is answered from memory.
        upto = self.position if self.shared_reads else None
        rows = models.fetch(self.database, sorted(channels), 0, upto, younger_than=timeout)
        return [encode_entry(i, m) for i, m in rows], upto or 0

    def _collect(self, channels: frozenset[str], last: int) -> list[str]:
        prefix: list[str] = []
        if last < self.gc_floor:
            prefix.append(encode_entry(self.gc_floor, encode_message(OUTDATED_TYPE, {})))
            last = self.gc_floor
        if not self.shared_reads:
            return prefix + [encode_entry(i, m) for i, m in self._fetch(channels, last)]
        position = self.position
        cache = self._cache
        if last >= self._cache_floor:
            start = bisect.bisect_right(cache, last, key=_row_id)
            return prefix + [entry for row_id, channel, entry in cache[start:]
                             if row_id <= position and channel in channels]
        return prefix + [encode_entry(i, m) for i, m in self._fetch(channels, last)]

    def _fetch(self, channels: frozenset[str], last: int) -> list[tuple[int, str]]:
        upto = self.position if self.shared_reads else None
        return models.fetch(self.database, sorted(channels), last, upto)

    def _register(self, waiter: Waiter) -> None:
        with self._lock:
            for channel in waiter.channels:
                self._waiters.setdefault(channel, set()).add(waiter)

    def _unregister(self, waiter: Waiter) -> None:
        with self._lock:
            for channel in waiter.channels:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[channel]

    @property
    def waiter_count(self) -> int:
        with self._lock:
            return len({w for ws in self._waiters.values() for w in ws})

    def _wake(self, channels: Iterable[str]) -> None:
        with self._lock:
            woken = {w for c in channels for w in self._waiters.get(c, ())}
        for waiter in woken:
            waiter.event.set()

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
                conn = self.database.connect(autocommit=True, keepalive=True)
                with conn.cursor() as cr:
                    cr.execute("LISTEN " + NOTIFY_CHANNEL)
                if self.position == 0:
                    # Ids at or below the GC floor are gone or outdated
                    # anyway; starting there spares the first read a gap.
                    self.position = self.watermark.position = models.gc_floor(self.database)
                    self._cache_floor = self.position
                # Anything committed while nobody listened is read now, and
                # its waiters woken, instead of waiting for the next NOTIFY.
                self._refresh(everything=True)
                self.connected.set()
                self._ready.set()
                delay = RECONNECT_FIRST
                self._listen(conn)
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

    def _listen(self, conn: psycopg2.extensions.connection) -> None:
        # poll(), not select(): next to thousands of parked polls the
        # listener's socket number is above 1023, which select() refuses.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        poller.register(self._wakeup_r, select.POLLIN)
        next_gc = time.monotonic()
        recheck = GAP_RECHECK
        while not self._stopping:
            now = time.monotonic()
            refresh = False
            if now >= next_gc:
                self.gc_floor = models.collect_garbage(self.database, self.retention)
                next_gc = now + self.gc_interval
                # Also a safety net: rows whose NOTIFY was lost (a writer that
                # died right after COMMIT) are read at the latest now.
                refresh = True
            wait = next_gc - now
            if self.watermark.blocked:
                wait = min(wait, recheck)
            if not refresh:
                readable = {fd for fd, _ in poller.poll(max(wait, 0) * 1000)}
                if self._stopping:
                    return
                refresh = self.watermark.blocked
                if conn.fileno() in readable:
                    conn.poll()
                    refresh = refresh or bool(conn.notifies)
            channels: list[str] = []
            if conn.notifies and not self.shared_reads:
                for notification in conn.notifies:
                    channels.extend(parse_notify_payload(notification.payload))
            conn.notifies.clear()
            if refresh:
                was_blocked_at = self.watermark.position if self.watermark.blocked else None
                self._refresh(channels)
                held_at_same_gap = self.watermark.blocked and self.watermark.position == was_blocked_at
                recheck = min(recheck * 2, GAP_RECHECK_MAX) if held_at_same_gap else GAP_RECHECK

    def _refresh(self, channels: Sequence[str] = (), *, everything: bool = False) -> None:
        """One shared read for the whole process, then wake whom it concerns."""
        if not self.shared_reads:
            # Odoo 15's way: wake the named channels (or all, after an outage)
            # and let every poller query the database for itself.
            if everything:
                with self._lock:
                    channels = list(self._waiters)
            self._wake(channels)
            return
        touched: set[str] = set()
        while True:
            result = models.read_after(self.database, self.watermark.position, READ_BATCH)
            self.reads += 1
            self.gc_floor = max(self.gc_floor, result.gc_floor)
            final = self.watermark.advance(result.rows, result.running, result.xmax,
                                           lambda: models.draw_transaction_id(self.database))
            if final:
                self._remember(final)
                touched.update(channel for _, channel, _ in final)
            if len(result.rows) < READ_BATCH or not final:
                break
        if touched:
            self._wake(touched)

    def _remember(self, rows: Sequence[Row]) -> None:
        cache = self._cache
        cache.extend((row_id, channel, encode_entry(row_id, message)) for row_id, channel, message in rows)
        self.position = rows[-1][0]
        if len(cache) > 2 * self.cache_size:
            kept = cache[-self.cache_size:]
            self._cache_floor = kept[0][0] - 1
            self._cache = kept


def _row_id(row: tuple[int, str, str]) -> int:
    return row[0]
