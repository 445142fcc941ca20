"""Handing a request's connection over to the application, for protocols
that leave HTTP behind after the request (a WebSocket upgrade).

A server that can do it puts a callable under ``environ[TAKEOVER]``.
Calling it returns the connection's socket and the bytes the server has
already read past the request (a client may send its first frame right
behind the upgrade); the server then writes nothing more on the connection
and does not read the next request from it. The application owns the
socket from then on and returns an empty body without calling
``start_response`` once it is done with it.

gevent's pywsgi handlers get it from :class:`GeventTakeover`
(``bus.handler.Handler`` and the gunicorn worker's handler mix it in);
Werkzeug's threaded server from :func:`threaded_server`.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Iterable

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

#: The environ key of the callable that hands the connection over.
TAKEOVER = "imbus.takeover"
#: What it returns: the socket, and the bytes read past the request.
Takeover = Callable[[], "tuple[socket.socket, bytes]"]
_TAKEN = "imbus.taken_over"


def _buffered(rfile: Any, sock: socket.socket) -> bytes:
    """What ``rfile`` holds already, without waiting for more: the socket is
    made non-blocking for the peek, which then reads no further."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        pending = rfile.peek(65536)
    except (BlockingIOError, OSError):
        pending = b""
    finally:
        sock.settimeout(timeout)
    return rfile.read(len(pending)) if pending else b""


class GeventTakeover:
    """Mix-in for a gevent pywsgi handler: offers ``environ[TAKEOVER]`` and,
    once it was used, writes no answer and closes the connection when the
    application returns."""

    socket: Any
    rfile: Any
    close_connection: bool
    _taken_over = False

    def get_environ(self) -> dict:
        environ = super().get_environ()  # type: ignore[misc]
        environ[TAKEOVER] = self._take_over
        return environ

    def _take_over(self) -> tuple[socket.socket, bytes]:
        self._taken_over = True
        self.close_connection = True
        return self.socket, _buffered(self.rfile, self.socket)

    def process_result(self) -> None:
        if self._taken_over:
            return
        super().process_result()  # type: ignore[misc]


class _TakenOver(BaseException):
    """Ends Werkzeug's handling of a request whose connection the
    application took: past the application, Werkzeug would write an answer
    (a 500 for one without ``start_response``). Not an ``Exception``, which
    it catches to do just that."""


class TakeoverRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler with ``environ[TAKEOVER]``."""

    def make_environ(self) -> Any:
        environ = super().make_environ()

        def take_over() -> tuple[socket.socket, bytes]:
            environ[_TAKEN] = True
            self.close_connection = True
            return self.connection, _buffered(self.rfile, self.connection)

        environ[TAKEOVER] = take_over
        return environ

    def run_wsgi(self) -> None:
        try:
            super().run_wsgi()
        except _TakenOver:
            pass


class _Handover:
    """Stops Werkzeug at a body returned for a connection taken over."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        if environ.get(_TAKEN):
            close = getattr(body, "close", None)
            if close is not None:
                close()
            raise _TakenOver
        return body


def threaded_server(host: str, port: int, app: Callable) -> BaseWSGIServer:
    """Werkzeug's threaded server for ``app``, with ``environ[TAKEOVER]``."""
    return make_server(host, port, _Handover(app), threaded=True, request_handler=TakeoverRequestHandler)
