"""gunicorn's gevent worker, told when to drain the application, and able
to hand a connection over to it (a WebSocket).

    gunicorn -k bus.gunicorn_worker.GeventWorker 'bus.app:create_app()'

On SIGTERM gunicorn's own gevent worker stops accepting and waits up to
``--graceful-timeout`` for its connections, then cuts them: a parked poll
is one, so every client of the worker loses its poll without an answer and
the worker always takes the whole grace period to stop. This worker also
drains the application (:meth:`bus.app.BusApp.drain`): parked polls answer
at once, WebSockets close with 1001, later requests get a JSON-RPC 503, and
the worker exits as soon as the answers are out.

The connection is handed over (``bus.takeover``) as the socket gunicorn
puts in ``environ["gunicorn.socket"]``, with nothing read past the request:
gunicorn's parser keeps what it read ahead to itself. A WebSocket client
sends nothing before the server's answer to its upgrade (RFC 6455 4.1), so
there is nothing there.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Iterable

import gevent
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from .takeover import TAKEOVER


class GeventWorker(_GunicornGeventWorker):
    wsgi: Callable
    #: The application itself; ``wsgi`` is it behind the hand-over.
    application: Callable

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.application = self.wsgi
        self.wsgi = _Handover(self.wsgi)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        drain = getattr(self.application, "drain", None)
        if drain is not None:
            # Out of the signal handler: draining takes locks and wakes greenlets.
            gevent.spawn(drain)


class _Handover:
    """Offers ``environ[TAKEOVER]``; once it was used, ends gunicorn's
    handling of the connection, which its worker does on StopIteration,
    instead of letting it write an answer."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        taken: list[bool] = []

        def take_over() -> tuple[socket.socket, bytes]:
            taken.append(True)
            return environ["gunicorn.socket"], b""

        environ[TAKEOVER] = take_over
        body = self.app(environ, start_response)
        if taken:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            raise StopIteration
        return body
