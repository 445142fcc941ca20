"""Where parked polls wait: their audiences, the audiences' wake-up events,
and the clock that times them out.

The hub knows nothing of the database or of rows. Polls join an audience,
take its event for their deadline, wait on it and leave; the dispatcher,
which alone reads the bus, tells the hub which channels have news
(:meth:`Hub.wake`), and the hub never calls back. The same code runs in
threads or, once gevent has monkey-patched the process, in greenlets.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Optional, Sequence

_logger = logging.getLogger(__name__)

#: Parked polls time out on a shared clock ticking this often (a poll's
#: answer may come up to two ticks after its timeout), not on one timer each.
DEADLINE_TICK = 0.05


class Audience:
    """The parked polls listening to one same set of channels.

    They share wake-up events, one per clock tick in which some of them
    time out, and, for a given ``last``, one answer: when one message wakes
    10,000 polls of the same channels, the answer is collected once and a
    parked poll costs no object of its own, not even a timer. A wake-up sets
    and forgets every event of the audience, so a poll that takes its event
    before it reads can never sleep through a wake-up that came after its
    read.
    """

    __slots__ = ("channels", "events", "size", "answer")

    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        #: tick at which its polls time out -> the event they wait on
        self.events: dict[int, threading.Event] = {}
        self.size = 0
        #: The last answer collected: (last, position, entries).
        self.answer: Optional[tuple[int, int, Sequence[bytes]]] = None


class Interrupt:
    """Ends one poll early, at once, however long it was to wait: a
    WebSocket's subscription replaced while its round is parked.

    Setting it releases only the event its poll waits on, taken out of the
    audience as a wake-up does: the other polls of that audience and tick
    wake once, answer from memory and park again on a fresh event. A poll
    given none pays nothing for the possibility.
    """

    __slots__ = ("_set", "_parked")

    def __init__(self) -> None:
        self._set = False
        #: (hub, audience, tick, event) while its poll waits.
        self._parked: Optional[tuple[Hub, Audience, int, threading.Event]] = None

    def set(self) -> None:
        self._set = True
        parked = self._parked
        if parked is not None:
            parked[0].release(*parked[1:])

    def park(self, hub: Hub, audience: Audience, tick: int, event: threading.Event) -> bool:
        """Note the event its poll is about to wait on; False when it is set
        already. Noted before the flag is read, so a :meth:`set` in between
        either is seen here or releases that event."""
        self._parked = (hub, audience, tick, event)
        return not self._set


class Hub:
    """The process's parked polls, grouped by audience, and their clock."""

    def __init__(self) -> None:
        self._audiences: dict[frozenset[str], Audience] = {}
        self._listening: dict[str, set[Audience]] = {}
        # tick -> audiences with polls that time out then; kept by _expire()
        self._expiring: dict[int, set[Audience]] = {}
        self._anything_expiring = threading.Event()
        self._lock = threading.Lock()
        #: Polls that ever joined an audience, for bus.herd to see a herd come back.
        self.joins = 0
        self._clock: Optional[threading.Thread] = None
        self._stopping = False

    def start(self) -> None:
        """Start the clock. It is a thread of its own, so timeouts never wait
        on the database, even while the dispatcher reconnects."""
        with self._lock:
            if self._clock is None and not self._stopping:
                self._clock = threading.Thread(target=self._keep_time, name="imbus-deadlines", daemon=True)
                self._clock.start()

    def stop(self) -> None:
        """Set every event, so every parked poll wakes, and stop the clock."""
        with self._lock:
            self._stopping = True
            events = [event for audience in self._audiences.values() for event in audience.events.values()]
        self._anything_expiring.set()  # lets the clock see _stopping
        for event in events:
            event.set()

    def audience(self, channels: frozenset[str]) -> Optional[Audience]:
        """The audience of ``channels`` if one exists; read without the lock,
        for a poll that may answer without joining."""
        return self._audiences.get(channels)

    def join(self, channels: frozenset[str]) -> Audience:
        with self._lock:
            audience = self._audiences.get(channels)
            if audience is None:
                audience = self._audiences[channels] = Audience(channels)
                for channel in channels:
                    self._listening.setdefault(channel, set()).add(audience)
            audience.size += 1
            self.joins += 1
            return audience

    def event(self, audience: Audience, tick: int) -> threading.Event:
        """The event a poll of ``audience`` timing out at ``tick`` waits on,
        set by the next wake-up of the audience or by the clock at ``tick``.

        Read without the lock first: after a wake-up, 10,000 woken polls of
        one audience come here before their catch-up read, and only the
        first of each tick needs to create the event. An event read from a
        dictionary a wake-up is replacing is one that wake-up sets."""
        event = audience.events.get(tick)
        if event is not None:
            return event
        with self._lock:
            event = audience.events.get(tick)
            if event is None:
                event = audience.events[tick] = threading.Event()
                self._expiring.setdefault(tick, set()).add(audience)
                self._anything_expiring.set()
            return event

    def leave(self, audience: Audience) -> None:
        with self._lock:
            audience.size -= 1
            if audience.size:
                return
            del self._audiences[audience.channels]
            for channel in audience.channels:
                audiences = self._listening[channel]
                audiences.discard(audience)
                if not audiences:
                    del self._listening[channel]

    def wake(self, channels: Iterable[str]) -> int:
        """Wake every audience listening to one of ``channels``; returns how
        many polls they hold."""
        with self._lock:
            woken = {a for c in channels for a in self._listening.get(c, ())}
            events: list[threading.Event] = []
            polls = 0
            for audience in woken:
                events.extend(audience.events.values())
                audience.events = {}
                polls += audience.size
        for event in events:
            event.set()
        return polls

    def release(self, audience: Audience, tick: int, event: threading.Event) -> None:
        """Set ``event``, the one the polls of ``audience`` timing out at
        ``tick`` wait on, and take it out so that they park again on a new one."""
        with self._lock:
            if audience.events.get(tick) is event:
                del audience.events[tick]
        event.set()

    def channels(self) -> list[str]:
        """Every channel some parked poll listens to."""
        with self._lock:
            return list(self._listening)

    @property
    def waiter_count(self) -> int:
        """How many polls are parked or being answered."""
        with self._lock:
            return sum(audience.size for audience in self._audiences.values())

    def _keep_time(self) -> None:
        while not self._stopping:
            try:
                self._anything_expiring.wait()
                time.sleep(DEADLINE_TICK)
                self._expire(time.monotonic())
            except Exception:
                # Parked polls wait on nothing else: the clock must go on.
                _logger.exception("bus deadline clock failed; going on")

    def _expire(self, now: float) -> None:
        """Set the events of every tick that has passed."""
        events = []
        with self._lock:
            for tick in [t for t in self._expiring if t * DEADLINE_TICK <= now]:
                for audience in self._expiring.pop(tick):
                    event = audience.events.pop(tick, None)
                    if event is not None:
                        events.append(event)
            if not self._expiring:
                self._anything_expiring.clear()
        for event in events:
            event.set()
