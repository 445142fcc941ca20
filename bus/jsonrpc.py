"""JSON-RPC 2.0 over HTTP, the way Odoo 15's ``type="json"`` routes speak it.

A request is ``{"jsonrpc": "2.0", "method": "call", "params": {...}, "id": ...}``;
the answer carries either ``result`` or ``error``. An error the application
decides on goes out as Odoo 15 sends it, so that Odoo's own web client shows
it: HTTP 200, Odoo's ``code`` and ``message``, and a ``data`` object with
Odoo's exception ``name`` (its client picks the dialog by it), ``message``,
``arguments`` (the message again: its warning dialog shows ``arguments[0]``),
``context`` and ``debug``. Odoo puts a traceback in ``debug``; here it stays
empty, and the server log gets the details. Odoo's client takes any HTTP
error status for a lost connection, so statuses are kept for what is one:
a body it cannot read, a body too large, a database out of reach.
"""
from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any, Callable, Iterable, Optional, cast

from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request, Response

from .database import RETRYABLE_ERRORS

_logger = logging.getLogger(__name__)

#: Odoo 15's ``error.message`` for every server-side error of a JSON route.
SERVER_ERROR = "Odoo Server Error"


class RPCError(Exception):
    """An error the client is meant to see: ``message`` says what went wrong,
    for a person; the class says which kind of error it is on the wire."""

    code = 200
    http_status = 200
    #: ``data.name``: an exception name Odoo's web client knows.
    name = "odoo.exceptions.UserError"
    #: ``error.message``, Odoo's heading for the kind; None: the message itself.
    title: Optional[str] = SERVER_ERROR
    #: The answer says ``Connection: close``: the request's body is left
    #: unread, or cannot be read to its end, and the next request on the
    #: connection could not be told apart from its rest.
    close_connection = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParams(RPCError):
    """Parameters missing or of the wrong kind; Odoo's client shows the
    message in its "Validation Error" dialog."""

    name = "odoo.exceptions.ValidationError"


class AccessDenied(RPCError):
    """A wrong login or password, named as Odoo's own login refusal."""

    name = "odoo.exceptions.AccessDenied"


class SessionExpired(RPCError):
    """Odoo's "log in again"; its client reacts to code 100 by showing the
    login screen."""

    code, name, title = 100, "odoo.http.SessionExpiredException", "Odoo Session Expired"


class NotFound(RPCError):
    """A record the caller may not see, whether it exists or not, so that a
    stranger cannot tell "forbidden" from "does not exist". Odoo 15 sends
    this one with HTTP 404, which its own client then reports as a lost
    connection; the code and name are Odoo's, the status is 200."""

    code, name, title = 404, "werkzeug.exceptions.NotFound", "404: Not Found"


class InternalError(RPCError):
    """A bug or an unexpected failure: a generic message and name (Odoo's
    client shows its generic server error dialog); the details are logged."""

    name = "builtins.Exception"


class ParseError(RPCError):
    code, http_status, name, title = -32700, 400, "parse_error", None


class InvalidRequest(RPCError):
    code, http_status, name, title = -32600, 400, "invalid_request", None


class UnreadableBody(InvalidRequest):
    """The body could not be read to its end: malformed chunks, or a client
    that stopped sending it."""

    close_connection = True


class PayloadTooLarge(RPCError):
    code, http_status, name, title = 413, 413, "payload_too_large", None
    close_connection = True


class ServiceUnavailable(RPCError):
    code, http_status, name, title = -32001, 503, "service_unavailable", None


#: A WSGI environ key a server sets to True when it writes a list body with
#: one gathered system call (``sendmsg``) and takes any bytes-like chunks,
#: memoryviews included (``bus.handler.Handler`` does). Other servers get
#: an answer as one ``bytes`` object, as PEP 3333 asks. A middleware that
#: reads or rewrites bodies (compression, a linter) must remove the key from
#: the environ it passes on.
GATHERED_WRITE = "imbus.gathered_write"


class RawJSON:
    """A result already encoded as JSON, as buffers (UTF-8 bytes, or
    memoryviews of them) spliced into the answer as they are: poll answers
    are assembled from pre-encoded rows, and one encoded array serves every
    poll that gets the same answer, so an answer is not re-encoded, and with
    a server that gathers its writes not even copied."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = parts


def _one_body(environ: dict, chunks: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """The body as the server can take it: the chunks as they are for a
    server that gathers its writes, else one bytes object (one system call
    instead of one per chunk, and no memoryview where bytes are due)."""
    if environ.get(GATHERED_WRITE) or (len(chunks) == 1 and type(chunks[0]) is bytes):
        return chunks
    return [b"".join(chunks)]


class JSONResponse(Response):
    """A JSON answer with werkzeug's full response API (``finish_response``
    may set cookies or headers on it), but a short WSGI call.

    Werkzeug's generic ``__call__`` (Location fixing, content-length
    sniffing, body re-encoding) costs several microseconds per answer. None
    of it applies to a JSON body set once with a status that has a body.
    """

    default_mimetype = "application/json"

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if (self.direct_passthrough or self._on_close or not isinstance(self.response, list)
                or environ["REQUEST_METHOD"] == "HEAD" or self.status_code < 200 or self.status_code in (204, 304)):
            if isinstance(self.response, list):
                self.response = [b"".join(self.response)]
            return super().__call__(environ, start_response)
        start_response(self.status, self.headers.to_wsgi_list())
        # bytes, or memoryviews for a server that gathers its writes.
        return cast("list[bytes]", _one_body(environ, self.response))


class JSONAnswer:
    """A JSON-RPC answer before it is a werkzeug response: a status and an
    encoded body (a list of buffers), itself a WSGI application.

    Most answers go out untouched, and werkzeug's ``Response`` and
    ``Headers`` cost about 8 us to build, paid 10,000 times when one message
    wakes 10,000 polls. :meth:`response` gives the werkzeug object where an
    application wants to add headers or cookies (``finish_response``).
    """

    __slots__ = ("chunks", "status")

    def __init__(self, chunks: list[bytes | memoryview], status: int = 200) -> None:
        self.chunks = chunks
        self.status = status

    def _headers(self) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json"), ("Content-Length", str(sum(map(len, self.chunks))))]

    def response(self) -> JSONResponse:
        # JSONResponse joins memoryviews into bytes before werkzeug sees them.
        return JSONResponse(cast("list[bytes]", self.chunks), self.status, Headers(self._headers()))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        start_response(_status_line(self.status), self._headers())
        # bytes, or memoryviews for a server that gathers its writes.
        return cast("list[bytes]", _one_body(environ, self.chunks))


class _ClosingAnswer(JSONAnswer):
    """An answer after which the server closes the connection, as gevent's
    pywsgi and werkzeug's server do when the answer says so."""

    __slots__ = ()

    def _headers(self) -> list[tuple[str, str]]:
        return [*super()._headers(), ("Connection", "close")]


@cache
def _status_line(status: int) -> str:
    """``404 NOT FOUND``, spelled as werkzeug spells it."""
    return f"{status} {HTTP_STATUS_CODES[status].upper()}"


def _encode(value: Any) -> str:
    if type(value) is int:  # the usual request id, without json.dumps's overhead
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def result_response(request_id: Any, result: Any) -> JSONAnswer:
    if isinstance(result, RawJSON):
        return JSONAnswer([b'{"jsonrpc":"2.0","id":%b,"result":' % _encode(request_id).encode(), *result.parts, b"}"])
    return JSONAnswer([('{"jsonrpc":"2.0","id":%s,"result":%s}' % (_encode(request_id), _encode(result))).encode()])


def error_response(request_id: Any, error: RPCError) -> JSONAnswer:
    data = {"name": error.name, "debug": "", "message": error.message, "arguments": [error.message], "context": {}}
    payload = {"code": error.code, "message": error.title or error.message, "data": data}
    body = {"jsonrpc": "2.0", "id": request_id, "error": payload}
    answer = _ClosingAnswer if error.close_connection else JSONAnswer
    return answer([_encode(body).encode()], error.http_status)


def read_envelope(request: Request, max_body: int) -> dict:
    """The decoded JSON-RPC object of a call, or an :class:`RPCError`."""
    try:
        envelope = json.loads(_read_body(request, max_body))
    except (ValueError, UnicodeDecodeError):
        raise ParseError("the request body is not valid JSON") from None
    except RecursionError:  # the decoder recurses once per nesting level
        raise ParseError("the request body is nested too deep") from None
    if not isinstance(envelope, dict):
        raise InvalidRequest("a JSON-RPC request is a JSON object")
    return envelope


def _read_body(request: Request, max_body: int) -> bytes:
    """The request body, or :class:`PayloadTooLarge` past ``max_body`` bytes.

    A body with a plain Content-Length is read straight from ``wsgi.input``:
    werkzeug's limited stream costs about 30 us more per request, and every
    re-poll pays it. A chunked body goes through werkzeug, which knows where
    it ends.
    """
    environ = request.environ
    length = environ.get("CONTENT_LENGTH", "")
    plain = length.isascii() and length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ
    declared = int(length) if plain else request.content_length
    if declared is not None and declared > max_body:
        raise _too_large(max_body)
    if plain:
        assert declared is not None  # plain: the digits of Content-Length
        try:
            raw = environ["wsgi.input"].read(declared) if declared else b""
        except OSError as exc:  # how gevent's input reports a body cut short
            raise _unreadable(request, exc) from None
        if len(raw) < declared:
            raise UnreadableBody("the request body ended before its Content-Length")
        return raw
    # One byte of slack: Werkzeug's limited stream silently truncates a
    # chunked body at the limit, and the length check below must see it.
    request.max_content_length = max_body + 1
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise _too_large(max_body) from None
    except ClientDisconnected as exc:  # werkzeug's name for any error of the stream
        raise _unreadable(request, exc.__context__ or exc) from None
    if len(raw) > max_body:
        raise _too_large(max_body)
    return raw


def _unreadable(request: Request, error: BaseException) -> UnreadableBody:
    """The error for a body the server's stream failed to read, logged as
    the one line a client's fault is worth."""
    _logger.info("request body of %s from %s unreadable: %s", request.path, request.remote_addr, error)
    return UnreadableBody("the request body could not be read to its end")


def _too_large(max_body: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over {max_body} bytes")


def read_params(envelope: dict) -> dict:
    params = envelope.get("params", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object of named parameters")
    return params


Handler = Callable[[Request, dict], Any]


def serve_call(handler: Handler, request: Request, max_body: int) -> JSONAnswer:
    """Run one JSON-RPC handler and turn its outcome into an HTTP answer."""
    request_id = None
    try:
        envelope = read_envelope(request, max_body)
        request_id = envelope.get("id")
        params = read_params(envelope)
        del envelope  # not held by a poll parked for a minute: only its params
        return result_response(request_id, handler(request, params))
    except RPCError as error:
        return error_response(request_id, error)
    except RETRYABLE_ERRORS as exc:
        _logger.warning("database unavailable during %s: %s", request.path, exc)
        return error_response(request_id, ServiceUnavailable("the database is unavailable, try again shortly"))
    except Exception:
        _logger.exception("error while serving %s", request.path)
        return error_response(request_id, InternalError("internal server error"))


def param(params: dict, name: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
    """One named parameter, type-checked, or :class:`InvalidParams`.

    ``bool`` is refused where an ``int`` is wanted, since JSON's ``true``
    would otherwise pass as 1.
    """
    if name not in params or params[name] is None:
        if required or default is ...:
            raise InvalidParams(f"missing parameter {name!r}")
        return default
    value = params[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise InvalidParams(f"parameter {name!r} must be {_kind_name(kinds)}")
    if not isinstance(value, kinds):
        raise InvalidParams(f"parameter {name!r} must be {_kind_name(kinds)}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", list: "a list", dict: "an object", bool: "a boolean",
             float: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
