"""How long a client may keep a connection waiting, and the clock that holds
it to that.

A connection is always in one phase: waiting for the next request
(``idle``, between requests on a kept-alive connection or before the first),
receiving a request's head, receiving its body, or in the application. The
first three have a deadline; the application has none, so a parked poll
waits as long as its poll timeout, and is held to the idle timeout again
once it has answered.

The defaults follow mainstream servers: ``idle`` 5 s, as uvicorn, Node.js
and Apache keep an idle connection (a poller re-polls within milliseconds of
an answer, so only connections nobody uses are closed); ``head`` 10 s, for
the whole head (Apache's mod_reqtimeout allows 20 to 40 s at a minimum rate,
nginx 60 s, but a head here is at most 64 KiB and a browser's is under
2 KiB); ``body`` 30 s for the whole body, enough for the 1 MiB the bus
accepts at 35 KB/s (nginx and Apache time each read instead, 60 s and
20 s, which a client sending a byte at a time never trips).

One :class:`Clock` per server enforces the deadlines of all its
connections: a greenlet that wakes a few times a second and ends the
connections whose time is up. A connection only notes when its phase began,
a clock read and two stores per phase. A gevent socket timeout would start
a timer at every wait of every keep-alive connection (about 2 us, as much as
parsing a re-poll's head) and would not bound a head sent a byte at a time
anyway: it limits each wait, not the phase.
"""
from __future__ import annotations

import argparse
import weakref
from dataclasses import dataclass
from time import monotonic
from typing import Optional, Protocol

import gevent

#: The most and the least a clock sleeps between two looks.
MAX_TICK = 0.5
MIN_TICK = 0.01
#: Looks per shortest timeout: a deadline is kept to within a tenth of it.
TICKS_PER_TIMEOUT = 10


@dataclass(frozen=True)
class Timeouts:
    """Seconds a client has for each phase of a request (see the module)."""

    idle: float = 5.0
    head: float = 10.0
    body: float = 30.0

    def __post_init__(self) -> None:
        for name in ("idle", "head", "body"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name} timeout must be a positive number of seconds")

    @property
    def tick(self) -> float:
        """How often a clock must look to keep these deadlines."""
        return min(MAX_TICK, max(MIN_TICK, min(self.idle, self.head, self.body) / TICKS_PER_TIMEOUT))


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--idle-timeout``, ``--head-timeout`` and ``--body-timeout``, for a
    command that serves with gevent."""
    defaults = Timeouts()
    group = parser.add_argument_group("client deadlines, in seconds (gevent server only)")
    group.add_argument("--idle-timeout", type=float, default=defaults.idle,
                       help=f"for the next request on a kept-alive connection (default {defaults.idle:g})")
    group.add_argument("--head-timeout", type=float, default=defaults.head,
                       help=f"for a request's whole head (default {defaults.head:g})")
    group.add_argument("--body-timeout", type=float, default=defaults.body,
                       help=f"for a request's whole body (default {defaults.body:g})")


def from_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Timeouts:
    """The deadlines :func:`add_options` read; a usage error for one that is
    not positive."""
    try:
        return Timeouts(idle=args.idle_timeout, head=args.head_timeout, body=args.body_timeout)
    except ValueError as exc:
        parser.error(str(exc))


class Timed(Protocol):
    """What a clock asks of a connection."""

    #: ``time.monotonic()`` when the current phase's time is up, or ``math.inf``.
    deadline: float

    def expire(self) -> None:
        """Called once the deadline has passed; ends the connection or moves
        its deadline."""


class Clock:
    """The deadlines of one server's connections, looked at every ``tick``
    seconds by one greenlet that runs while there are connections."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._connections: set[Timed] = set()
        self._looking: Optional[gevent.Greenlet] = None

    def watch(self, connection: Timed) -> None:
        self._connections.add(connection)
        if self._looking is None:
            self._looking = gevent.spawn(self._look)

    def forget(self, connection: Timed) -> None:
        self._connections.discard(connection)

    def _look(self) -> None:
        try:
            while self._connections:
                gevent.sleep(self.tick)
                now = monotonic()
                for connection in [c for c in self._connections if c.deadline <= now]:
                    connection.expire()
        finally:
            self._looking = None


_clocks: weakref.WeakKeyDictionary[object, Clock] = weakref.WeakKeyDictionary()


def clock_of(server: object, timeouts: Timeouts) -> Clock:
    """The clock of ``server``'s connections, made at its first connection.
    Per server rather than per process: a server's connections all run in
    its thread's event loop, and so must the greenlet that ends them."""
    clock = _clocks.get(server)
    if clock is None:
        clock = _clocks[server] = Clock(timeouts.tick)
    else:
        clock.tick = min(clock.tick, timeouts.tick)
    return clock
