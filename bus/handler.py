"""gevent pywsgi's request handler, fitted to long-polling.

Use it as ``WSGIServer(..., handler_class=bus.handler.Handler)``
(``python -m bus serve`` does), or ``Handler.with_timeouts(Timeouts(...))``
for other deadlines than the defaults. Next to pywsgi's own handler it:

* parses request heads with :func:`bus.request_head.read_head` instead of
  the email package (a re-poll pays 5 us instead of 30-80 us), refuses a
  head over 64 KiB with 431 and an HTTP/1.1 request without Host with 400,
  and closes the connection after an HTTP/1.0 request that names a
  Transfer-Encoding, whose framing RFC 9112 6.1 calls faulty;
* holds clients to deadlines (:mod:`bus.deadlines`) for the next request on
  an idle connection, for a request's head and for its body, and none while
  the application has the request: a parked poll is never cut off;
* closes the connection of a request whose body was not read to its end,
  where pywsgi would go on to the next request. After an answer that says
  ``Connection: close`` (a 413, say) pywsgi first reads the rest of the
  body, which never ends for a client that declared 10 MB and sends
  nothing; and a chunked body whose framing broke under the application
  leaves the stream at an unknown place, from which the next request would
  be read out of the body's rest (request smuggling). A closing connection
  first drains what its client still sends, for a moment, so that the client
  reads the answer rather than a reset;
* logs a client's fault (a malformed request, a reset or a deadline missed
  in the middle of a request) as one INFO line, where pywsgi logs an ERROR
  with the socket's repr or a traceback;
* writes a list body and the response head with one gathered system call
  (``sendmsg``), taking memoryviews as they are. pywsgi sends the head, then
  each chunk, with a ``sendall`` each: two system calls for the smallest
  answer. And a large poll answer is made of slices of the dispatcher's
  shared blocks (``bus.window``), which then reach the kernel without being
  copied into one string first. It says so to the application with
  ``environ[bus.jsonrpc.GATHERED_WRITE]``. Not over TLS: an SSL socket has
  no ``sendmsg``, and there pywsgi writes as it always does;
* formats the Date header once a second, not once an answer;
* closes the connection of a request that a stopping server cuts off
  (its grace period ran out), where pywsgi would answer a plain-text 500;
* formats no access-log line for a server that has no access log;
* hands the connection over to an application that asks for it
  (``bus.takeover``: a WebSocket upgrade).
"""
from __future__ import annotations

import logging
import math
import time
from socket import SHUT_RD, SHUT_WR
from typing import Any, BinaryIO, ClassVar, Optional

from gevent import GreenletExit
from gevent.pywsgi import MAX_REQUEST_LINE, WSGIHandler, format_date_time
from gevent.socket import socket as GeventSocket
from gevent.ssl import SSLSocket

from .deadlines import Clock, Timeouts, clock_of
from .jsonrpc import GATHERED_WRITE
from .request_head import RequestHead, read_head
from .takeover import GeventTakeover

try:  # what pywsgi writes its access log to when it has none
    from gevent.pywsgi import _NoopLog
except ImportError:  # a later gevent: keep its own behaviour
    _NoopLog = None
try:  # what pywsgi's input raises for a malformed chunked body
    from gevent.pywsgi import _InvalidClientInput
except ImportError:  # a later gevent: its errors are then taken for resets
    _InvalidClientInput = ValueError

_logger = logging.getLogger(__name__)

#: Buffers one ``sendmsg`` may take (Linux's IOV_MAX).
MAX_BUFFERS = 1024
#: Seconds a closing connection goes on reading what its client still sends
#: (nginx's lingering_timeout).
LINGER = 5.0

# A connection's phases, as the log names them.
IDLE = "next request"
HEAD = "request head"
BODY = "request body"
CLOSING = "closing"

_REFUSALS = {code: b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % (code, reason)
             for code, reason in ((400, b"Bad Request"), (431, b"Request Header Fields Too Large"))}


class Handler(GeventTakeover, WSGIHandler):
    """pywsgi's handler with :func:`read_head`, deadlines, connections closed
    after a body left unread, gathered writes, connections handed over, and
    no access-log line built for a server that has no access log."""

    # Set by pywsgi's WSGIHandler as it answers; declared for the type checker.
    provided_date: Optional[bytes]
    headers_sent: bool
    code: int
    status: Any  # bytes; a str once a send failed, as pywsgi has it

    #: The deadlines of every connection this class handles.
    timeouts: ClassVar[Timeouts] = Timeouts()
    #: When the current phase's time is up (``time.monotonic()``).
    deadline = math.inf
    _phase = IDLE
    _expired = False
    _clock: Clock

    @classmethod
    def with_timeouts(cls, timeouts: Timeouts) -> type[Handler]:
        """This handler with other deadlines, for ``handler_class``."""
        return type(cls.__name__, (cls,), {"timeouts": timeouts, "__module__": cls.__module__})

    def MessageClass(self, stream: BinaryIO, *args: object) -> RequestHead:  # noqa: N802 - pywsgi's name
        version = self.request_version
        head = read_head(stream, host_required=version == "HTTP/1.1")
        if version == "HTTP/1.0" and head.get("transfer-encoding") is not None:
            # Faulty framing (RFC 9112 6.1): answer, then close. Without a
            # Connection: keep-alive pywsgi closes after an HTTP/1.0 request.
            del head["connection"]
        self._phase = BODY
        self.deadline = time.monotonic() + self.timeouts.body
        return head

    # -- phases and deadlines -------------------------------------------------

    def handle(self) -> None:
        self._clock = clock_of(self.server, self.timeouts)
        self._clock.watch(self)
        try:
            super().handle()
        except OSError as exc:
            # pywsgi writes its refusal of a malformed request outside any
            # error handling: a client already gone makes that write fail.
            _logger.debug("%s left before its refusal: %s", self._peer(), exc)
        finally:
            self._clock.forget(self)

    def read_requestline(self) -> str:
        # pywsgi's own, between two deadlines: the idle one until the
        # request's first byte is in (or the connection ended), then the
        # head's. Written out, not wrapped: every request pays each call.
        rfile, timeouts = self.rfile, self.timeouts
        self._phase = IDLE
        self.deadline = time.monotonic() + timeouts.idle
        rfile.peek(1)
        self._phase = HEAD
        self.deadline = time.monotonic() + timeouts.head
        return rfile.readline(MAX_REQUEST_LINE).decode("latin-1")

    def expire(self) -> None:
        """The phase's time is up; called by the clock."""
        self.deadline = math.inf
        if self._phase is BODY and self._body_read():
            return  # the application has the whole request: it may work or park as long as it needs
        self._expired = True
        if self._phase in (HEAD, BODY):
            allowed = self.timeouts.head if self._phase is HEAD else self.timeouts.body
            _logger.info("%s: no complete %s within %g s, closing", self._peer(), self._phase, allowed)
        sock = getattr(self, "socket", None)
        if sock is None:
            return
        try:
            # Only the reading half: the read waiting on it ends, and an
            # answer can still go out. gevent's plain socket method, since an
            # SSL socket's own drops its TLS state, and the answer would go
            # out in clear.
            GeventSocket.shutdown(sock, SHUT_RD)
        except OSError:
            pass

    def _body_read(self) -> bool:
        """Whether the request's body has been read to its end."""
        body = self.wsgi_input
        if body is None:
            return True
        if body.chunked_input:
            return body.chunk_length == 0
        return body.position >= (body.content_length or 0)

    # -- closing after a body left unread ------------------------------------

    def run_application(self) -> None:
        closing = False
        try:
            super().run_application()
        except OSError:
            # The connection broke under the answer, or the body's framing
            # did and the application let the error through.
            self.close_connection = True
            raise
        finally:
            body = self.wsgi_input
            if body.chunked_input or body.position < (body.content_length or 0):
                closing = self._close_over_unread_body()
        if closing:
            self._linger()  # the answer is out

    def _close_over_unread_body(self) -> bool:
        """Whether to close, rather than go on to the next request, after a
        body not read to its end: when the answer closes the connection
        anyway (a 413, say: pywsgi would first read the rest of a body that
        a client declaring 10 MB may never send), or when it is chunked: its
        framing may have broken under the application, and pywsgi's input
        then leaves the stream where the next request would be read from the
        body's rest. A Content-Length body pywsgi reads to its end, within
        the body's deadline, and the connection goes on."""
        body = self.wsgi_input
        if self._body_read() or not (self.close_connection or body.chunked_input):
            return False
        self.close_connection = True
        # pywsgi reads what is left of a body before the next request; a
        # closing connection has none: the input is told it is read.
        body.chunked_input = False
        body.content_length = body.position
        return True

    def _linger(self) -> None:
        """Stop writing, then read and drop what the client still sends, for
        at most :data:`LINGER` seconds. A client still sending the body that
        was refused reads the answer only once it has sent it all, and a
        close with its data unread resets the connection, answer and all."""
        self._phase = CLOSING
        self.deadline = time.monotonic() + LINGER
        try:
            self.socket.shutdown(SHUT_WR)
            while self.socket.recv(65536):
                pass
        except OSError:
            pass

    # -- client errors -------------------------------------------------------

    def _handle_client_error(self, ex: BaseException) -> Optional[tuple[str, bytes]]:
        if self._expired:
            return None  # the clock said why
        if isinstance(ex, (ValueError, _InvalidClientInput)):
            head = self.headers
            refused = isinstance(head, RequestHead) and head.status
            _logger.info("%s: bad request: %s", self._peer(), head.status if refused else ex)
            code = head.code if refused else 400
            return str(code), _REFUSALS[code]
        if isinstance(ex, OSError):
            _logger.info("%s: connection lost during the %s: %s", self._peer(), self._phase, ex)
            return None
        return super()._handle_client_error(ex)

    def _peer(self) -> str:
        address = self.client_address
        return "%s:%s" % address[:2] if isinstance(address, tuple) else str(address or "-")

    def get_environ(self) -> dict:
        environ = super().get_environ()
        if self._gathers():
            environ[GATHERED_WRITE] = True
        return environ

    def _gathers(self) -> bool:
        return not isinstance(self.socket, SSLSocket)

    def finalize_headers(self) -> None:
        if self.provided_date is None:
            self.provided_date = _http_date()
            self.response_headers.append((b"Date", self.provided_date))
        super().finalize_headers()

    def process_result(self) -> None:
        chunks = self.result
        if (not isinstance(chunks, list) or self.headers_sent or not self.status or self.code in (204, 304)
                or not self._gathers()):
            super().process_result()
            return
        self.headers_sent = True
        self.finalize_headers()  # a list has a length: Content-Length, never chunked
        head: list[bytes] = [b"HTTP/1.1 ", self.status, b"\r\n"]
        for name, value in self.response_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._send_gathered([b"".join(head), *chunks])

    def _send_gathered(self, buffers: list[bytes | memoryview]) -> None:
        """Send every buffer, in order, as few system calls as the socket allows."""
        try:
            while buffers:
                sent = self.socket.sendmsg(buffers[:MAX_BUFFERS])
                self.response_length += sent
                for index, buffer in enumerate(buffers):
                    if sent < len(buffer):
                        buffers = [memoryview(buffer)[sent:], *buffers[index + 1:]]
                        break
                    sent -= len(buffer)
                else:
                    buffers = []
        except OSError as exc:  # as pywsgi's own _sendall reports it
            self.status = "socket error: %s" % exc
            if self.code > 0:
                self.code = -self.code
            raise

    def handle_error(self, t: type, v: BaseException, tb: object) -> None:
        if issubclass(t, GreenletExit):
            # The server is stopping and ends what outlived its grace period:
            # the client sees the connection close, which it can retry on.
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def log_request(self) -> None:
        # With log=None pywsgi still formats a line for every request (the
        # date, the timing) and hands it to a no-op writer: 4 % of the
        # server's time when one message wakes 1,000 polls.
        if _NoopLog is None or not isinstance(self.server.log, _NoopLog):
            super().log_request()


_date = (0, b"")


def _http_date() -> bytes:
    """Now, as the Date header says it: formatted anew once a second."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_date_time(second))
    return _date[1]
