"""Which bus ids are final: the no-gap, no-duplicate guarantee.

PostgreSQL hands out sequence ids when rows are inserted but makes the rows
visible when their transaction commits, so ids do not become visible in
order. A reader that delivers id 8 while id 7 is still uncommitted, and then
asks for ``id > 8``, never sees 7: that is Odoo's lost-message bug.

The watermark is the highest id below which nothing can still appear. Rows
above a gap are held back until the gap is proven closed:

* The writer takes its transaction id before it draws bus ids (see
  ``models._write_pending``). So when the reader's snapshot shows id 8 but not
  id 7, the transaction that drew 7 was running when the snapshot was taken:
  it is in the snapshot's list of running transactions (or it rolled back).
* Each gap remembers the running transactions of the snapshot in which it was
  first seen. Once none of them is running in a later snapshot, the gap either
  filled (the rows are visible) or never will (they rolled back), and the
  watermark moves past it.

The cost lands on the reader, once per process per wake-up, and only while a
gap is open; writers pay nothing beyond taking their transaction id a moment
earlier. A gap that rolled back waits for the transactions that were running
when it was seen, which for a chat server are milliseconds long.
"""
from __future__ import annotations

from typing import Sequence

from .models import Row


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
        # Gaps seen so far: (first id, last id, transactions running when first seen).
        self._gaps: list[tuple[int, int, frozenset[int]]] = []

    def advance(self, rows: Sequence[Row], running: frozenset[int]) -> list[Row]:
        """Take one read (every visible row after ``position``, in id order, and
        its snapshot's running transactions) and return the rows now final."""
        final: list[Row] = []
        expected = self.position + 1
        self.blocked = False
        for row in rows:
            row_id = row[0]
            if row_id < expected:
                continue
            if row_id > expected and self.hold_back_gaps and self._still_open(expected, row_id - 1, running):
                self.blocked = True
                break
            final.append(row)
            expected = row_id + 1
        if final:
            self.position = final[-1][0]
            self._gaps = [gap for gap in self._gaps if gap[1] > self.position]
        return final

    def _still_open(self, lo: int, hi: int, running: frozenset[int]) -> bool:
        """Decide the gap [lo, hi] and remember it while it may still fill.

        Overlapping gaps seen earlier keep their owners (the earliest
        observation is the precise one); any part seen for the first time adds
        the transactions running now. Merging owners can only make a gap wait
        longer, never close too early.
        """
        owners: frozenset[int] = frozenset()
        covered = 0
        kept = []
        for g_lo, g_hi, g_owners in self._gaps:
            if g_hi < lo or g_lo > hi:
                kept.append((g_lo, g_hi, g_owners))
                continue
            owners |= g_owners
            covered += min(g_hi, hi) - max(g_lo, lo) + 1
        if covered < hi - lo + 1:
            owners |= running
        if owners & running:
            kept.append((lo, hi, owners))
            self._gaps = kept
            return True
        self._gaps = kept
        return False
