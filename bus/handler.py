"""gevent pywsgi's request handler, fitted to long-polling.

Use it as ``WSGIServer(..., handler_class=bus.handler.Handler)``
(``python -m bus serve`` does). Next to pywsgi's own handler it:

* parses request heads with :func:`bus.request_head.read_head` instead of
  the email package (a re-poll pays 5 us instead of 30-80 us);
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
* formats no access-log line for a server that has no access log.
"""
from __future__ import annotations

import time
from typing import BinaryIO

from gevent import GreenletExit
from gevent.pywsgi import WSGIHandler, format_date_time
from gevent.ssl import SSLSocket

from .jsonrpc import GATHERED_WRITE
from .request_head import RequestHead, read_head

try:  # what pywsgi writes its access log to when it has none
    from gevent.pywsgi import _NoopLog
except ImportError:  # a later gevent: keep its own behaviour
    _NoopLog = None

#: Buffers one ``sendmsg`` may take (Linux's IOV_MAX).
MAX_BUFFERS = 1024


class Handler(WSGIHandler):
    """pywsgi's handler with :func:`read_head`, gathered writes, and no
    access-log line built for a server that has no access log."""

    def MessageClass(self, stream: BinaryIO, *args: object) -> RequestHead:  # noqa: N802 - pywsgi's name
        return read_head(stream)

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
        head = [b"HTTP/1.1 ", self.status, b"\r\n"]
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
