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

from typing import Any, Callable, Iterable, Optional, Sequence

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import controllers, schema
from .channels import BROADCAST, Target, channel_with_db, cut_after_types, type_prefixes
from .config import Settings, require_database_url
from .database import Database
from .dispatcher import Dispatcher
from .jsonrpc import serve_call

#: A route's view: a request in, a WSGI application (the answer) out.
View = Callable[[Request], Callable[[dict, Callable], Iterable[bytes]]]


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
        self.database = Database(settings.database_url, maxconn=settings.pool_size)
        if settings.install_schema:
            self.install_schema()
        self.dispatcher = Dispatcher(
            self.database,
            retention=settings.retention,
            gc_interval=settings.gc_interval,
            hold_back_gaps=settings.hold_back_gaps,
            shared_reads=settings.shared_reads,
        )
        self.dbname = self.database.dbname
        self._resubscribe_prefixes = type_prefixes(self.resubscribe_types)
        self.url_map = Map()
        self._views: dict[str, View] = {}
        self._fixed: dict[tuple[str, str], View] = {}
        controllers.register(self)

    def install_schema(self) -> None:
        """Create the tables this application needs; subclasses add theirs."""
        schema.install(self.database)

    # -- routing --------------------------------------------------------------

    def json_route(self, path: str) -> Callable:
        """Register ``handler(request, params) -> result`` as a JSON-RPC route."""
        def decorator(handler: Callable[[Request, dict], Any]) -> Callable:
            max_body = self.settings.max_body
            if type(self).finish_response is BusApp.finish_response:
                # Nobody touches the answer: skip building werkzeug's Response.
                self._add(path, ["POST"], lambda request: serve_call(handler, request, max_body))
            else:
                self._add(path, ["POST"], lambda request: self.finish_response(
                    request, serve_call(handler, request, max_body).response()))
            return handler
        return decorator

    def finish_response(self, request: Request, response: Response) -> Response:
        """Last touch on every JSON-RPC answer; override to add headers or
        cookies that a handler asked for (mail sets its session cookie here)."""
        return response

    def http_route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable:
        """Register ``handler(request) -> Response`` as a plain HTTP route."""
        def decorator(handler: Callable[[Request], Response]) -> Callable:
            self._add(path, list(methods), handler)
            return handler
        return decorator

    def _add(self, path: str, methods: list[str], view: View) -> None:
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

    def poll(self, request: Request, names: list[str], last: int, options: dict) -> Sequence[bytes]:
        """Wait for and return the notifications a poll should receive, each
        an encoded JSON entry ``{"id":N,"message":...}``."""
        dbname = self.dbname
        targets = self.subscriptions(request, names, last, options)
        entries = self.dispatcher.poll({channel_with_db(dbname, target) for target in targets},
                                       last, self.settings.timeout, peek=bool(options.get("peek")))
        if self._resubscribe_prefixes:
            entries = cut_after_types(entries, self._resubscribe_prefixes)
        return entries

    # -- WSGI ----------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
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
        return response(environ, start_response)

    def close(self) -> None:
        """Release parked polls, stop the dispatcher and close connections."""
        self.dispatcher.stop()
        self.database.close()


def create_app(database_url: Optional[str] = None, **options: Any) -> BusApp:
    """Build a bus application; ``database_url`` defaults to ``$DATABASE_URL``
    (or libpq's ``PG*`` variables). Other keywords are :class:`Settings` fields."""
    return BusApp(Settings(database_url=require_database_url(database_url), **options))
