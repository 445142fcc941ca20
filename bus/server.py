"""Run an application in one of the WSGI servers the library supports.

``gevent`` is the production choice (thousands of parked polls in one
process); ``threaded`` is Werkzeug's development server (one thread per
parked poll). Under gunicorn use ``gunicorn -k gevent 'bus.app:create_app()'``.
"""
from __future__ import annotations

import logging
import socket
from typing import Callable

_logger = logging.getLogger(__name__)


def serve_gevent(app: Callable, host: str, port: int) -> None:
    """Serve with gevent's pywsgi; the process must be monkey-patched first."""
    from gevent.pywsgi import WSGIServer

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Linux copies TCP_NODELAY to accepted sockets. Without it a small poll
    # answer on a keep-alive connection can wait ~40 ms for Nagle's timer.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, port))
    listener.listen(4096)
    server = WSGIServer(listener, app, log=None, error_log=_logger)
    _logger.info("serving on http://%s:%d (gevent)", host, listener.getsockname()[1])
    server.serve_forever()


def serve_threaded(app: Callable, host: str, port: int) -> None:
    """Serve with Werkzeug's threaded development server."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    _logger.info("serving on http://%s:%d (threaded)", host, server.server_port)
    server.serve_forever()
