"""Cross-origin reads of the routes that declare them, as Odoo 15 answers its
``cors="*"`` routes: a page on another site (a livechat widget) may poll the
bus with ``fetch``.

A browser first sends a preflight (``OPTIONS`` with the method and headers it
means to use) and sends the request only if the answer allows its origin;
then it lets the page read the answer only if that carries
``Access-Control-Allow-Origin`` too. Neither stops a request from running:
any client can send any ``Origin``. CORS decides which pages may *read*.

``Access-Control-Allow-Credentials`` is never sent, with ``*`` or with a list:
a cross-origin page is only let read answers made without the visitor's
cookies, so another site can never read a logged-in user's notifications.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Union
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

#: The setting that lets every origin read, Odoo's ``cors="*"``.
ANY_ORIGIN = "*"
#: Seconds a browser may reuse a preflight's answer: Odoo's day (Chromium
#: keeps it two hours at most).
MAX_AGE = str(60 * 60 * 24)
#: The request headers a page may send, as Odoo 15 lists them; a JSON body's
#: ``Content-Type`` is the one that makes the browser preflight a poll.
ALLOW_HEADERS = "Origin, X-Requested-With, Content-Type, Accept, Authorization"
_VARY = ("Vary", "Origin")
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: ``"*"``, or the exact origins allowed (a string: comma-separated).
Origins = Union[str, Iterable[str]]
View = Callable[[Request], Callable]
Headers = list[tuple[str, str]]


def parse_origins(origins: Origins) -> Optional[frozenset[str]]:
    """None when any origin may read, else the origins that may.

    An origin is compared as a browser serialises it (``scheme://host[:port]``,
    lower case, no default port, no path): one spelt otherwise could never
    match, so it is refused here rather than silently ignored.
    """
    if isinstance(origins, str):
        origins = origins.split(",")
    listed = [origin.strip() for origin in origins if origin.strip()]
    if listed == [ANY_ORIGIN]:
        return None
    for origin in listed:
        _check_origin(origin)
    return frozenset(listed)


def _check_origin(origin: str) -> None:
    parts = urlsplit(origin)
    try:
        bad_port = parts.port == _DEFAULT_PORTS.get(parts.scheme)  # browsers leave a default port out
    except ValueError:  # not a number, or out of range
        bad_port = True
    if (parts.scheme not in _DEFAULT_PORTS or not parts.hostname or bad_port or parts.username is not None
            or origin != f"{parts.scheme}://{parts.netloc}".lower()):
        raise ValueError(f"not an origin as browsers send it: {origin!r} (write scheme://host[:port], "
                         "in lower case, without a path, a trailing slash or a default port; or '*' alone)")


class CORSPolicy:
    """Which origins may read the answers of the routes that declare CORS."""

    def __init__(self, origins: Origins) -> None:
        self.origins = parse_origins(origins)

    def allow_origin(self, origin: str) -> Optional[str]:
        """The ``Access-Control-Allow-Origin`` for a page of ``origin``, or
        None when that origin may not read."""
        if self.origins is None:
            return ANY_ORIGIN
        return origin if origin in self.origins else None

    def answer_headers(self, origin: str, methods: str) -> Headers:
        """The CORS headers of an answer to a page of ``origin``: none for an
        origin not allowed. A list of origins decides by the caller's, so its
        answers say so (``Vary``) to any cache on the way."""
        allowed = self.allow_origin(origin)
        headers = [] if self.origins is None else [_VARY]
        if allowed is not None:
            headers += [("Access-Control-Allow-Origin", allowed), ("Access-Control-Allow-Methods", methods)]
        return headers

    def route(self, view: View, methods: Sequence[str]) -> View:
        """``view``, its answers readable from the allowed origins.

        An origin-less or same-origin call (the usual re-poll: browsers send
        ``Origin`` on their own POSTs too) is answered as it is, after one
        environ lookup and one string comparison. The comparison is only a
        shortcut: CORS headers on a same-origin answer would be harmless.
        """
        allow_methods = ", ".join(methods)

        def cross_origin_view(request: Request) -> Callable:
            answer = view(request)
            environ = request.environ
            origin = environ.get("HTTP_ORIGIN")
            if origin is None or origin == f"{environ['wsgi.url_scheme']}://{environ.get('HTTP_HOST')}":
                return answer
            return _WithHeaders(answer, self.answer_headers(origin, allow_methods))
        return cross_origin_view

    def preflight(self, methods: Sequence[str]) -> View:
        """The ``OPTIONS`` answer for a route taking ``methods``; a bare 403
        for an origin or a method not allowed. The route itself never runs."""
        allow_methods = ", ".join(methods)

        def preflight_view(request: Request) -> Response:
            environ = request.environ
            origin = environ.get("HTTP_ORIGIN")
            if (origin is None or self.allow_origin(origin) is None
                    or environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD") not in methods):
                return Response(status=403)
            return Response(status=200, headers=[
                *self.answer_headers(origin, allow_methods),
                ("Access-Control-Max-Age", MAX_AGE), ("Access-Control-Allow-Headers", ALLOW_HEADERS)])
        return preflight_view


class _WithHeaders:
    """A route's answer (any WSGI application) with headers added."""

    __slots__ = ("answer", "headers")

    def __init__(self, answer: Callable, headers: Headers) -> None:
        self.answer = answer
        self.headers = headers

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        headers = self.headers

        def start(status: str, answer_headers: Headers, exc_info=None) -> Callable:
            return start_response(status, [*answer_headers, *headers], exc_info)
        return self.answer(environ, start)
