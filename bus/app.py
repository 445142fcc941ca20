"""The WSGI application: routing, the JSON-RPC envelope, and the ``poll`` hook
that decides which channels a caller listens to.

Embed it in any WSGI server::

    from bus import create_app
    app = create_app("postgresql://127.0.0.1/chat")

Extend it by subclassing :class:`BusApp` (``mail.app.MailApp`` does): add
routes with :meth:`json_route` / :meth:`http_route` and override
:meth:`subscriptions` to say which channels a request is entitled to.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar, cast

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import controllers, schema
from .channels import BROADCAST, Target, channel_with_db, cut_after_types, type_prefixes
from .config import Settings, require_database_url
from .cors import CORSPolicy
from .database import Database, retry_until
from .dispatcher import Dispatcher
from .herd import HERD
from .hub import Interrupt
from .jsonrpc import ServiceUnavailable, error_response, serve_call
from .websocket import Sockets

#: A route's view: a request in, a WSGI application (the answer) out.
View = Callable[[Request], Callable[[dict, Callable], Iterable[bytes]]]
T = TypeVar("T")


class BusApp:
    """A WSGI callable serving the bus routes, and a base for applications
    built on the bus."""

    #: Notification types after which the receiver's subscriptions change
    #: (mail's "you were added to a channel"). A poll answer stops at the first
    #: of them: notifications after it may be on channels the next poll, whose
    #: subscriptions are derived anew, will hear but this one did not.
    resubscribe_types: frozenset[str] = frozenset()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cors = CORSPolicy(settings.cors_origins)
        self._startup_deadline = time.monotonic() + settings.startup_timeout
        self.database = Database(settings.database_url, maxconn=settings.pool_size)
        if settings.install_schema:
            self.at_start(self.install_schema)
        self.dispatcher = Dispatcher(
            self.database,
            # Filled in by Settings.__post_init__ when not given.
            retention=cast(float, settings.retention),
            gc_interval=cast(float, settings.gc_interval),
            hold_back_gaps=settings.hold_back_gaps,
            shared_reads=settings.shared_reads,
            herd=HERD if settings.pace_herds else None,
        )
        self.dbname = self.at_start(lambda: self.database.dbname)
        self._resubscribe_prefixes = type_prefixes(self.resubscribe_types)
        self.url_map = Map()
        self._views: dict[str, View] = {}
        self._fixed: dict[tuple[str, str], View] = {}
        #: Set by :meth:`drain`: the process is shutting down.
        self.closing = False
        #: The open WebSockets, closed by :meth:`drain`.
        self.sockets = Sockets()
        controllers.register(self)

    def at_start(self, work: Callable[[], T]) -> T:
        """Run start-up ``work`` that needs the database (installing tables,
        loading a secret), retrying with back-off while the database is full,
        starting up or out of reach, until ``startup_timeout`` seconds after
        the application began to start."""
        return retry_until(self._startup_deadline, work, "the database is not available at start-up")

    def install_schema(self) -> None:
        """Create the tables this application needs; subclasses add theirs."""
        schema.install(self.database)

    # -- routing --------------------------------------------------------------

    def json_route(self, path: str, *, cors: bool = False) -> Callable:
        """Register ``handler(request, params) -> result`` as a JSON-RPC route.

        ``cors=True`` lets pages of the allowed origins (``Settings.cors_origins``)
        call it from another site, as Odoo's ``cors="*"``; without it the
        route is same-origin only.
        """
        def decorator(handler: Callable[[Request, dict], Any]) -> Callable:
            max_body = self.settings.max_body
            if type(self).finish_response is BusApp.finish_response:
                # Nobody touches the answer: skip building werkzeug's Response.
                self._add(path, ["POST"], lambda request: serve_call(handler, request, max_body), cors)
            else:
                self._add(path, ["POST"], lambda request: self.finish_response(
                    request, serve_call(handler, request, max_body).response()), cors)
            return handler
        return decorator

    def finish_response(self, request: Request, response: Response) -> Response:
        """Last touch on every JSON-RPC answer; override to add headers or
        cookies that a handler asked for (mail sets its session cookie here)."""
        return response

    def http_route(self, path: str, methods: Iterable[str] = ("GET",), *, cors: bool = False) -> Callable:
        """Register ``handler(request) -> Response`` as a plain HTTP route
        (``cors`` as for :meth:`json_route`)."""
        def decorator(handler: Callable[[Request], Response]) -> Callable:
            self._add(path, list(methods), handler, cors)
            return handler
        return decorator

    def _add(self, path: str, methods: list[str], view: View, cors: bool = False) -> None:
        if cors:
            self._add(path, ["OPTIONS"], self.cors.preflight(methods))
            view = self.cors.route(view, methods)
        endpoint = f"{len(self._views)}:{path}"
        self.url_map.add(Rule(path, endpoint=endpoint, methods=methods))
        self._views[endpoint] = view
        if "<" not in path:
            # A fixed path is found with one dict lookup; werkzeug's matcher
            # is kept for converters, 404 and 405 (a re-poll skips ~20 us).
            for method in methods:
                self._fixed[(method, path)] = view

    # -- the poll hook -----------------------------------------------------------

    def subscriptions(self, request: Request, names: list[str], last: int, options: dict) -> Sequence[Target]:
        """The channels a poll listens to: by default the string channels the
        client named, plus ``broadcast``. Override to add the channels a caller
        is entitled to (and to drop names it may not hear). ``last`` is the
        newest id the client has seen, perhaps from another process: state
        kept from this process's reads holds only up to its dispatcher's
        ``position``."""
        return [*names, BROADCAST]

    def poll(self, request: Request, names: list[str], last: int, options: dict, *,
             interrupt: Optional[Interrupt] = None) -> Sequence[bytes]:
        """Wait for and return the notifications a poll should receive, each
        an encoded JSON entry ``{"id":N,"message":...}``. A long-poll and
        every round of a WebSocket come here; a WebSocket passes an
        ``interrupt`` that ends the wait when its client resubscribes."""
        dbname = self.dbname
        targets = self.subscriptions(request, names, last, options)
        entries = self.dispatcher.poll({channel_with_db(dbname, target) for target in targets},
                                       last, self.settings.timeout, peek=bool(options.get("peek")),
                                       interrupt=interrupt)
        if self._resubscribe_prefixes:
            entries = cut_after_types(entries, self._resubscribe_prefixes)
        return entries

    # -- WSGI ----------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.closing:
            return _refuse_while_closing(environ, start_response)
        # Not stored back into the environ: that makes a reference cycle per
        # request, left for the cyclic collector, whose full passes over
        # thousands of parked polls stall the whole process for 100-300 ms.
        request = Request(environ, populate_request=False)
        view = self._fixed.get((request.method, request.path))
        try:
            if view is None:
                endpoint, _ = self.url_map.bind_to_environ(environ).match()
                view = self._views[endpoint]
            response = view(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        if self.closing:
            # A parked poll released by drain(): its client must not send
            # the next poll down a connection that is about to close.
            start_response = _closing_connection(start_response)
        return response(environ, start_response)

    def drain(self) -> None:
        """Begin a shutdown: parked polls answer now (with what they have,
        usually nothing), and every request from here on is refused with a
        JSON-RPC 503 and ``Connection: close``, so that a client re-polling
        on a kept-alive connection learns to retry elsewhere instead of
        meeting a half-closed server. Requests in flight finish normally;
        the server then waits for their answers before it closes. Open
        WebSockets are closed with 1001 (going away): their clients
        reconnect elsewhere and resubscribe from their ``last``."""
        self.closing = True
        self.sockets.close_all()
        self.dispatcher.stop()

    def close(self) -> None:
        """Drain, stop the dispatcher and close the pool's connections."""
        self.drain()
        self.database.close()


def _closing_connection(start_response: Callable) -> Callable:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("Connection", "close")], exc_info)
    return start


def _refuse_while_closing(environ: dict, start_response: Callable) -> Iterable[bytes]:
    answer = error_response(None, ServiceUnavailable("the server is shutting down; try again shortly"))
    return answer(environ, _closing_connection(start_response))


def create_app(database_url: Optional[str] = None, **options: Any) -> BusApp:
    """Build a bus application; ``database_url`` defaults to ``$DATABASE_URL``
    (or libpq's ``PG*`` variables). Other keywords are :class:`Settings` fields."""
    return BusApp(Settings(database_url=require_database_url(database_url), **options))
