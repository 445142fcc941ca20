"""Pacing the herd: while the polls one read woke are still coming back,
and rows keep coming, the next read waits.

One message to a channel of 1,000 logged-in users wakes 1,000 polls, and
each costs a full HTTP round (answer, re-poll, park) of a few hundred
microseconds: a third of a second of one core. When messages keep coming,
every one of them started such a round for everybody, and the process did
little else: the very posts that fed the herd queued behind it (one server
delivered about 12 posts a second to 1,000 users this way). Delivering what
came meanwhile in one answer, once the herd is back, costs one round
instead of one per message.

So after a read that woke at least :data:`HERD` polls, a read that new rows
ask for waits until 90 % of them have joined an audience again (or
:data:`SETTLE_MAX` passed), and then for as long again, so that the herd
takes at most about half of the process. Only rows that come *while* a herd
is out are held: a message after a quiet spell is read at once, whatever
the number of polls, so a lone message reaches 10,000 polls as fast as
before. Nothing is skipped or reordered; reads only come later, and the
deferred rows all come in the next one.
"""
from __future__ import annotations

from typing import Callable, Optional

#: Fewer polls than this woken at once cost too little to pace.
HERD = 256
#: Share of a herd that must be parked again before it counts as back.
SETTLED = 0.9
#: The pause after a herd came back, as a share of the time that took: the
#: herd then takes at most 1 / (1 + PAUSE) of the process.
PAUSE = 1.0
#: Longest a herd is waited for, and longest the pause after it: slow or
#: vanished clients never hold delivery for more than twice this.
SETTLE_MAX = 1.0


class HerdPacer:
    """The dispatcher's note of the last herd it woke; ``rejoins`` is a
    callable returning the hub's running count of polls that joined. With
    ``herd`` None, reads are never held."""

    def __init__(self, rejoins: Callable[[], int], *, herd: Optional[int] = HERD,
                 settle_max: float = SETTLE_MAX) -> None:
        self._rejoins = rejoins
        self.herd = herd
        self.settle_max = settle_max
        #: (woken at, polls woken, the hub's join count then) of the herd out.
        self._out: Optional[tuple[float, int, int]] = None
        #: When the herd out came back, and how long it took.
        self._back: Optional[tuple[float, float]] = None
        #: Whether rows came while the herd was out.
        self._flooded = False

    def woke(self, polls: int, now: float) -> None:
        """A read woke ``polls`` polls at ``now``."""
        if self.herd is not None and polls >= self.herd:
            self._out, self._back, self._flooded = (now, polls, self._rejoins()), None, False
        else:
            self._out = self._back = None

    def hold(self, now: float, *, rows: bool = True) -> float:
        """Seconds a read should wait; 0 to read now. ``rows``: whether new
        rows ask for it (a NOTIFY, or the timer of a flood), rather than the
        garbage collection or a gap's recheck, which hold but do not make
        the herd pause once back."""
        out = self._out
        if out is None:
            return 0.0
        woken_at, polls, joined_before = out
        if self._back is None:
            elapsed = now - woken_at
            if self._rejoins() - joined_before < polls * SETTLED and elapsed < self.settle_max:
                self._flooded = self._flooded or rows
                return min(0.005, self.settle_max - elapsed)
            self._back = (now, elapsed)
            if not self._flooded:
                self._out = None  # nothing came while it was out: no pause
                return 0.0
        back_at, took = self._back
        remaining = back_at + min(took * PAUSE, self.settle_max) - now
        if remaining > 0:
            return remaining
        self._out = self._back = None
        return 0.0
