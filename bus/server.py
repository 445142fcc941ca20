"""Run an application in one of the WSGI servers the library supports.

``gevent`` is the production choice (thousands of parked polls in one
process); ``threaded`` is Werkzeug's development server (one thread per
parked poll). Under gunicorn use ``gunicorn -k bus.gunicorn_worker.GeventWorker
'bus.app:create_app()'``.

Both servers stop cleanly on SIGTERM (what ``docker stop`` and process
managers send) and on SIGINT (Ctrl-C) unless the process was started with
SIGINT ignored, as a shell does for background jobs: they stop accepting,
call ``on_shutdown`` so the application can answer its parked polls at once
and refuse new requests (``BusApp.drain``), and give the answers in flight
``grace`` seconds to go out. Without that a parked poll would hold the
process for a whole poll timeout, or be cut off without an answer.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Callable, Iterable, Iterator, Optional

from .deadlines import Timeouts

_logger = logging.getLogger(__name__)

#: Seconds a shutdown waits for the answers in flight before it drops them.
GRACE = 3.0
#: Seconds gevent's server then gives its remaining (idle) connections.
_IDLE_CLOSE = 0.2
#: How often a shutdown looks whether the answers in flight are out.
_IDLE_CHECK = 0.02


def serve_gevent(app: Callable, host: str, port: int, *, on_shutdown: Optional[Callable[[], None]] = None,
                 grace: float = GRACE, reuse_port: bool = False, timeouts: Timeouts = Timeouts()) -> None:
    """Serve with gevent's pywsgi; the process must be monkey-patched first.

    ``reuse_port`` binds with ``SO_REUSEPORT``, so that several processes
    serve one port (``bus.workers``); ``timeouts`` are the deadlines of a
    client (:mod:`bus.deadlines`)."""
    import gevent
    from gevent import monkey
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    from .handler import Handler

    if not monkey.is_module_patched("socket"):
        # Unpatched, one parked poll blocks the whole process.
        raise RuntimeError("serve_gevent needs gevent's monkey.patch_all() before anything else is imported")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Linux copies TCP_NODELAY to accepted sockets. Without it a small poll
    # answer on a keep-alive connection can wait ~40 ms for Nagle's timer.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, port))
    listener.listen(4096)
    tracked = _InFlight(app)
    # A pool rather than bare greenlets, so that stopping can end the
    # connections still open once the answers in flight are out.
    server = WSGIServer(listener, tracked, spawn=Pool(), log=None, error_log=_logger,
                        handler_class=Handler.with_timeouts(timeouts))

    stopping: list[bool] = []

    def shut_down() -> None:
        if stopping:
            return
        stopping.append(True)
        _logger.info("shutting down")
        server.stop_accepting()
        if on_shutdown is not None:
            on_shutdown()
        tracked.wait_idle(grace)
        server.close()

    for signum in stop_signals():
        gevent.signal_handler(signum, gevent.spawn, shut_down)
    _logger.info("serving on http://%s:%d (gevent)", host, listener.getsockname()[1])
    # What is left once every answer is out are idle keep-alive connections
    # (a browser keeps one open): they are closed after this short wait.
    server.serve_forever(stop_timeout=_IDLE_CLOSE)


def serve_threaded(app: Callable, host: str, port: int, *, on_shutdown: Optional[Callable[[], None]] = None,
                   grace: float = GRACE) -> None:
    """Serve with Werkzeug's threaded development server."""
    from .takeover import threaded_server

    tracked = _InFlight(app)
    server = threaded_server(host, port, tracked)

    stopping = threading.Lock()

    def shut_down() -> None:
        if not stopping.acquire(blocking=False):
            return
        _logger.info("shutting down")
        if on_shutdown is not None:
            on_shutdown()
        server.shutdown()

    # shutdown() waits for serve_forever() to return, so it cannot run in the
    # main thread, where the signal handler runs. Python only lets the main
    # thread install handlers; a server run from another thread is stopped
    # by whoever started it.
    if threading.current_thread() is threading.main_thread():
        for signum in stop_signals():
            signal.signal(signum, lambda signum, frame: threading.Thread(target=shut_down, daemon=True).start())
    _logger.info("serving on http://%s:%d (threaded)", host, server.server_port)
    try:
        server.serve_forever()
        tracked.wait_idle(grace)
    finally:
        server.server_close()


def stop_signals() -> list[signal.Signals]:
    """SIGTERM, and SIGINT unless the process inherited it ignored: a shell
    starts background jobs that way so that Ctrl-C spares them, and such a
    process is stopped with SIGTERM."""
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    return signals


class _InFlight:
    """WSGI middleware keeping the answers not yet fully written.

    A shutdown waits for these, not for the server's connections: an idle
    keep-alive connection must not hold it, and Werkzeug's request threads
    are daemons, so the process would otherwise exit under an answer that is
    still being sent. An answer counts until the server closes its body, as
    WSGI servers must. The answers are kept in a set, whose add and discard
    are atomic in threads and greenlets alike: a lock and a condition here
    cost every answer of a fan-out about 3 us.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app
        self._live: set[_Answer] = set()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer = _Answer(self._live)
        self._live.add(answer)
        try:
            answer.body = self.app(environ, start_response)
        except BaseException:
            self._live.discard(answer)
            raise
        if type(answer.body) is list:
            # Still a list, so that a server that gathers its writes
            # (bus.handler) sends it, head included, in one system call.
            return _ListAnswer(answer)
        return answer

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no answer is in flight; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self._live:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_IDLE_CHECK)
        return True


class _Answer:
    """An application's body, leaving the live set when the server closes it."""

    __slots__ = ("body", "live")

    def __init__(self, live: set[_Answer]) -> None:
        self.body: Iterable[bytes] = ()
        self.live = live

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.live.discard(self)


class _ListAnswer(list):
    """A list body, as a list, leaving the live set when the server closes it."""

    __slots__ = ("answer",)

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.body)
        self.answer = answer

    def close(self) -> None:
        self.answer.close()
