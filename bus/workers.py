"""Several server processes on one port: one per core.

A gevent server is one hub on one core. :func:`run_workers` runs N copies of
a server command, each binding the same address with ``SO_REUSEPORT`` so
that the kernel spreads new connections across them, and each with its own
dispatcher: every process LISTENs, so a message committed anywhere wakes
the polls parked in all of them. The supervisor itself imports no
application code and holds no connection: it forwards SIGTERM and SIGINT,
restarts a worker that dies, and exits when every worker has stopped.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Optional

from .server import stop_signals

_logger = logging.getLogger(__name__)

#: Seconds the workers get to stop after the supervisor forwards SIGTERM.
GRACE = 10.0
#: A worker that lived less than this before it died is restarted after a
#: growing delay, so that one failing at start-up does not spin.
STEADY = 10.0
RESTART_FIRST = 1.0
RESTART_MAX = 10.0
_CHECK = 0.2


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _die_with_parent() -> None:
    """In the worker, before it runs: SIGTERM it if the supervisor dies, so
    that a supervisor killed outright leaves no worker serving on."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def worker_count(requested: Optional[int], server: str) -> int:
    """How many processes a command line asks for: one per core for the
    gevent server by default; Werkzeug's threaded server runs alone."""
    if requested is None:
        return default_workers() if server == "gevent" else 1
    if requested < 1:
        raise ValueError("--workers must be at least 1")
    if requested > 1 and server != "gevent":
        raise ValueError("--workers above 1 needs the gevent server")
    return requested


def worker_command(module: str, argv: list[str], *extra: str) -> list[str]:
    """``python -m module`` with the supervisor's own arguments, run as one
    worker sharing the port (later options win in argparse)."""
    return [sys.executable, "-m", module, *argv, *extra, "--workers", "1", "--reuse-port"]


class _Worker:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process: Optional[subprocess.Popen] = None
        self.started = 0.0
        self.delay = RESTART_FIRST
        self.restart_at: Optional[float] = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Restart the worker if it died, after its back-off delay."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        assert self.process is not None
        status = self.process.poll()
        if status is None:
            return
        self.delay = RESTART_FIRST if now - self.started >= STEADY else min(self.delay * 2, RESTART_MAX)
        _logger.warning("worker %d exited with status %d; restarting it in %.0fs", self.process.pid, status,
                        self.delay)
        self.restart_at = now + self.delay

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, deadline: float) -> int:
        """The worker's exit status; it is killed if it outlives ``deadline``."""
        if self.process is None or self.restart_at is not None:
            return 0
        try:
            return self.process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _logger.warning("worker %d did not stop in time; killing it", self.process.pid)
            self.process.kill()
            self.process.wait()
            return 1


def run_workers(argv: list[str], count: int, *, grace: float = GRACE) -> int:
    """Run ``count`` copies of the command ``argv`` until SIGTERM or SIGINT;
    returns 0 when every worker stopped cleanly. The command must bind its
    port with ``SO_REUSEPORT`` (``--reuse-port``)."""
    stopping: list[int] = []
    for signum in stop_signals():
        signal.signal(signum, lambda signum, frame: stopping.append(signum))
    workers = [_Worker(argv) for _ in range(count)]
    for worker in workers:
        worker.start()
    _logger.info("started %d workers", count)
    while not stopping:
        time.sleep(_CHECK)
        now = time.monotonic()
        for worker in workers:
            if not stopping:
                worker.check(now)
    _logger.info("stopping %d workers", count)
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + grace
    statuses = [worker.wait(deadline) for worker in workers]
    return 0 if not any(statuses) else 1
