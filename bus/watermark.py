"""Which bus ids are final: the no-gap, no-duplicate guarantee.

PostgreSQL hands out sequence ids when rows are inserted but makes the rows
visible when their transaction commits, so ids do not become visible in
order. A reader that delivers id 8 while id 7 is still uncommitted, and then
asks for ``id > 8``, never sees 7: that is Odoo's lost-message bug.

The watermark is the highest id below which nothing can still appear. Rows
above a gap are held back until the gap is proven closed:

* A writer takes its transaction id before it draws bus ids (see
  ``models._write_pending``). So when the reader's snapshot S shows id 8 but
  not id 7, the transaction that drew 7 already had its id when S was taken,
  and had not committed: it was running then (or it rolled back).
* A snapshot lists the running transactions only below its ``xmax`` (the
  newest *completed* id + 1); a running transaction with a newer id is not
  listed. So the owners of a gap first seen in S are S's running list plus
  every id from S's ``xmax`` up to a *horizon*: a transaction id drawn after
  S, which is newer than any id that existed when S was taken. Once the
  horizon's transaction has completed, every later snapshot lists all of the
  owners that are still running.
* When none of the owners runs any more, the gap has either filled (its rows
  are visible) or never will (they rolled back), and the watermark moves on.

"Running" would include every transaction of the database, a ten-minute
import that never touches the bus included: a gap whose writer rolled back
would then hold every later row back until the import ends. So the possible
owners are narrowed to bus writers. Every writer takes a transaction-level
advisory lock (shared, one fixed key) before it draws bus ids, and holds it
until its transaction ends (``models._INSERT_ONE``). While a gap stays
open, the reader asks which transactions hold that lock (``writing``) *after*
the read in which the gap was first seen and *before* the read it passes
``writing`` with. An owner X of a missing id drew it before the first
sighting (a higher id was already visible), so it took the lock before; if
X still runs at this read's snapshot, it ran when ``writing`` was asked, so
it held the lock then: X is in ``writing``. A running transaction missing
from ``writing`` owns none of the gap, and is not waited for. A gap first
seen in this very read gets no such narrowing: its owners may have taken the
lock after ``writing`` was asked. The horizon still decides which unlisted
ids may be owners; ``writing`` only drops the running ones that are not.

The cost lands on the reader, once per process per wake-up, and only while a
gap is open: one horizon (one short transaction) per newly seen gap, and a
look at the lock table while one stays open. Writers pay nothing beyond
taking their transaction id and the shared lock a moment earlier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .channels import Row


@dataclass(frozen=True)
class Owners:
    """The transactions that may have drawn the ids of a gap: those listed,
    and every id in ``[unlisted_from, unlisted_to)``."""

    listed: frozenset[int]
    unlisted_from: int
    unlisted_to: int

    def any_running(self, running: frozenset[int]) -> bool:
        return any(x in self.listed or self.unlisted_from <= x < self.unlisted_to for x in running)

    def merge(self, other: Owners) -> Owners:
        """A superset of both: merging can only make a gap wait longer."""
        if self.unlisted_from >= self.unlisted_to:
            span = (other.unlisted_from, other.unlisted_to)
        elif other.unlisted_from >= other.unlisted_to:
            span = (self.unlisted_from, self.unlisted_to)
        else:
            span = (min(self.unlisted_from, other.unlisted_from), max(self.unlisted_to, other.unlisted_to))
        return Owners(self.listed | other.listed, *span)


class Watermark:
    """Tracks the final position of one process's view of the bus.

    With ``hold_back_gaps`` off it behaves like Odoo 15 (every visible row is
    taken as final), which exists so tests and benchmarks can show what the
    protection buys.
    """

    def __init__(self, position: int = 0, *, hold_back_gaps: bool = True) -> None:
        self.position = position
        self.hold_back_gaps = hold_back_gaps
        #: True while rows are held back behind a gap that may still fill.
        self.blocked = False
        # Gaps seen so far: (first id, last id, their possible owners).
        self._gaps: list[tuple[int, int, Owners]] = []

    def advance(self, rows: Sequence[Row], running: frozenset[int], xmax: int,
                horizon: Callable[[], int], writing: Optional[frozenset[int]] = None) -> list[Row]:
        """Take one read and return the rows now final.

        ``rows`` are every visible row after ``position``, in id order, read in
        a snapshot whose running transactions are ``running`` and whose xmax
        is ``xmax``. ``horizon()`` returns a transaction id drawn now (after
        that snapshot); it is called only when a gap is seen for the first
        time, and its transaction must have completed before the next read.
        ``writing``, when given, are the transactions of ``running`` that
        held the bus writers' lock at a moment after the previous read and
        before this one's snapshot; gaps seen before this read wait only for
        them.
        """
        final: list[Row] = []
        expected = self.position + 1
        self.blocked = False
        fresh_owners = None
        for row in rows:
            row_id = row[0]
            if row_id < expected:
                continue
            if row_id > expected and self.hold_back_gaps:
                if fresh_owners is None and not self._covered(expected, row_id - 1):
                    fresh_owners = Owners(running, xmax, horizon())
                if self._still_open(expected, row_id - 1, running, fresh_owners, writing):
                    self.blocked = True
                    break
            final.append(row)
            expected = row_id + 1
        if final:
            self.position = final[-1][0]
            self._gaps = [gap for gap in self._gaps if gap[1] > self.position]
        return final

    def _covered(self, lo: int, hi: int) -> bool:
        """Whether every id of [lo, hi] belongs to a gap seen before."""
        covered = sum(min(g_hi, hi) - max(g_lo, lo) + 1 for g_lo, g_hi, _ in self._gaps if g_hi >= lo and g_lo <= hi)
        return covered >= hi - lo + 1

    def _still_open(self, lo: int, hi: int, running: frozenset[int], fresh: Owners | None,
                    writing: Optional[frozenset[int]]) -> bool:
        """Decide the gap [lo, hi] and remember it while it may still fill.

        A gap seen before keeps the owners of its first sighting (the precise
        ones); ids seen missing for the first time add this read's owners. A
        gap first seen in this very read is open: its unlisted owners cannot
        be told apart from newer transactions until the horizon completes. A
        gap seen before waits for its owners that still run and, when
        ``writing`` is known, hold the writers' lock.
        """
        owners = None
        kept = []
        for g_lo, g_hi, g_owners in self._gaps:
            if g_hi < lo or g_lo > hi:
                kept.append((g_lo, g_hi, g_owners))
            else:
                owners = g_owners if owners is None else owners.merge(g_owners)
        new = not self._covered(lo, hi)
        if new:
            assert fresh is not None
            owners = fresh if owners is None else owners.merge(fresh)
        assert owners is not None
        if new and (owners.listed or owners.unlisted_from < owners.unlisted_to):
            self._gaps = kept + [(lo, hi, owners)]
            return True
        if not new and owners.any_running(running if writing is None else writing):
            self._gaps = kept + [(lo, hi, owners)]
            return True
        self._gaps = kept
        return False
