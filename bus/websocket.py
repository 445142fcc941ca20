"""The bus over a WebSocket, as Odoo 16+ serves it on ``/websocket``: one
socket per client carrying what its long-polls would.

A client subscribes with a text frame ``{"event_name": "subscribe", "data":
{"channels": [...], "last": N, "options": {...}}}``, checked as a poll's
parameters are; the server then runs rounds of the application's ``poll``
hook with the handshake's request, as long-polls one after the other would,
so the same subscriptions and access rules apply, and sends each non-empty
answer as one text frame holding the answer's JSON array, following from the
highest id it sent. A new subscribe replaces the previous one at once, even
while a round waits: the round is interrupted (``bus.hub.Interrupt``).

wsproto does the framing; the handshake's answer is written here from the
WSGI environ, on the socket the server hands over (``bus.takeover``). Each
socket has a reader (a thread, or a greenlet under gevent) for its client's
frames and pings, and the server's request thread runs the rounds.

Errors end the socket with a close code, as Odoo 16 uses them: 1001 going
away (the server drains), 1003 a frame that is not a subscribe, 1008 invalid
parameters, 1009 a message over ``max_body``, 1011 a server error, 1013 the
database unavailable, 4001 the session expired.
"""
from __future__ import annotations

import binascii
import json
import logging
import socket
import threading
from base64 import b64decode
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from werkzeug.wrappers import Request, Response
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from . import controllers
from .channels import array_parts, entry_id
from .cors import CORSPolicy
from .database import RETRYABLE_ERRORS
from .hub import Interrupt
from .jsonrpc import InternalError, InvalidParams, RPCError, SessionExpired
from .takeover import TAKEOVER

if TYPE_CHECKING:
    from .app import BusApp

_logger = logging.getLogger(__name__)

NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED = 1003
POLICY = 1008
TOO_BIG = 1009
SERVER_ERROR = 1011
TRY_AGAIN = 1013
SESSION_EXPIRED = 4001
#: Noted, never sent: the connection broke before a close frame could go.
ABNORMAL = 1006

#: Set in the environ of a socket's handshake request, which every round
#: of the socket passes to the poll hook: see :func:`is_socket`.
SOCKET = "imbus.websocket"
#: Seconds a closing socket waits for its client's close frame.
CLOSE_TIMEOUT = 1.0
_RECV_SIZE = 65536


class HandshakeRefused(Exception):
    """An upgrade request the server does not take: ``status`` and
    ``headers`` are the HTTP answer."""

    def __init__(self, status: int, message: str, headers: Optional[list[tuple[str, str]]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def _tokens(value: Optional[str]) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


def accept_token(request: Request, cors: CORSPolicy) -> bytes:
    """The ``Sec-WebSocket-Accept`` of a valid upgrade request (RFC 6455
    4.2.1) from an origin that may open one, else :class:`HandshakeRefused`.

    A socket from another origin that ``cors`` allows is opened without the
    request's cookies: as for a cross-origin poll, another site's page may
    hear what anyone may, never a logged-in visitor's own notifications.
    """
    environ = request.environ
    upgrade = [("Upgrade", "websocket")]
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    if ("websocket" not in _tokens(environ.get("HTTP_UPGRADE"))
            or "upgrade" not in _tokens(environ.get("HTTP_CONNECTION"))
            or environ.get("SERVER_PROTOCOL") != "HTTP/1.1" or not _is_key(key)):
        raise HandshakeRefused(426, "this route only speaks WebSocket", upgrade)
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        raise HandshakeRefused(426, "WebSocket version 13 only", [*upgrade, ("Sec-WebSocket-Version", "13")])
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and origin != f"{environ['wsgi.url_scheme']}://{environ.get('HTTP_HOST')}":
        if cors.allow_origin(origin) is None:
            raise HandshakeRefused(403, "this origin may not open a WebSocket")
        environ.pop("HTTP_COOKIE", None)
    return generate_accept_token(key.encode("ascii"))


def _is_key(key: str) -> bool:
    try:
        return len(b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def is_socket(request: Request) -> bool:
    """Whether the poll hook is running a WebSocket's round. A long-poll
    made with a session that ended goes on as an anonymous caller's (as
    Odoo 15's does), but a socket's handshake holds its cookie for good: a
    hook raises ``SessionExpired`` there instead (close code 4001), as
    Odoo 16's bus does, and the client logs in again."""
    return SOCKET in request.environ


class Sockets:
    """The process's open WebSockets, so that a shutdown can close them."""

    def __init__(self) -> None:
        self._open: set[SocketSession] = set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: SocketSession) -> None:
        self._open.add(session)
        if self.closing:
            session.close(GOING_AWAY, "the server is shutting down")

    def discard(self, session: SocketSession) -> None:
        self._open.discard(session)

    def close_all(self) -> None:
        """Close every socket with 1001, now and as they open from here on."""
        self.closing = True
        for session in list(self._open):
            session.close(GOING_AWAY, "the server is shutting down")


def serve(app: BusApp, request: Request, accept: bytes) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI answer to an accepted upgrade: it takes the connection over
    and serves the socket on it until it closes."""
    def answer(environ: dict, start_response: Callable) -> Iterable[bytes]:
        take_over = environ.get(TAKEOVER)
        if take_over is None:
            return Response("this server cannot hand a connection over", status=501)(environ, start_response)
        sock, pending = take_over()
        request.environ[SOCKET] = True
        session = SocketSession(app, request, sock)
        try:
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept)
        except OSError:
            sock.close()
            return []
        app.sockets.add(session)
        try:
            session.run(pending)
        finally:
            app.sockets.discard(session)
        return []
    return answer


class _Malformed(Exception):
    """A client frame that is not a subscribe (1003)."""


class SocketSession:
    """One client's socket: its subscription, the round serving it, and the
    reader of its frames."""

    def __init__(self, app: BusApp, request: Request, sock: socket.socket) -> None:
        self.app = app
        self.request = request
        self.sock = sock
        self.connection = Connection(ConnectionType.SERVER)
        self.max_message = app.settings.max_body
        self.ping_interval = app.settings.websocket_ping
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        #: (channels, last, options) of the latest subscribe, None before one.
        self._subscription: Optional[tuple[list[str], int, dict]] = None
        #: Counts subscribes: an answer to a replaced one is not sent.
        self._generation = 0
        self._interrupt: Optional[Interrupt] = None
        #: The close code sent, once the server began closing.
        self.closed_with: Optional[int] = None
        self._client_closed = threading.Event()

    # -- the rounds, on the server's request thread ----------------------------

    def run(self, pending: bytes) -> None:
        reader = threading.Thread(target=self._read, args=(pending,), name="imbus-websocket", daemon=True)
        reader.start()
        try:
            self._serve_rounds()
        except Exception:
            _logger.exception("WebSocket round failed")
            self.close(SERVER_ERROR, "internal server error")
        finally:
            self._client_closed.wait(CLOSE_TIMEOUT)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            reader.join(CLOSE_TIMEOUT)
            self.sock.close()

    def _serve_rounds(self) -> None:
        while True:
            with self._changed:
                while self._subscription is None and self.closed_with is None:
                    self._changed.wait()
                if self.closed_with is not None:
                    return
                assert self._subscription is not None
                channels, last, options = self._subscription
                generation = self._generation
                interrupt = self._interrupt = Interrupt()
            if self.app.closing:
                self.close(GOING_AWAY, "the server is shutting down")
                return
            code = self._round(channels, last, options, interrupt, generation)
            if code is not None:
                self.close(*code)
                return

    def _round(self, channels: list[str], last: int, options: dict, interrupt: Interrupt,
               generation: int) -> Optional[tuple[int, str]]:
        """One poll, its answer sent; the close code if it failed."""
        try:
            entries = self.app.poll(self.request, channels, last, options, interrupt=interrupt)
        except SessionExpired as error:
            return SESSION_EXPIRED, error.message
        except InternalError as error:
            return SERVER_ERROR, error.message
        except RPCError as error:
            return POLICY, error.message
        except RETRYABLE_ERRORS as exc:
            _logger.warning("database unavailable during a WebSocket round: %s", exc)
            return TRY_AGAIN, "the database is unavailable, try again shortly"
        if not entries:
            return None
        frame = b"".join(array_parts(entries)).decode("utf-8")
        with self._changed:
            if self._generation != generation or self.closed_with is not None:
                return None  # resubscribed meanwhile: the client's new cursor holds
            self._subscription = (channels, entry_id(entries[-1]), options)
            self._send(Message(data=frame))
        return None

    # -- frames from the client, on the reader ----------------------------------

    def _read(self, pending: bytes) -> None:
        try:
            self._receive_frames(pending)
        except OSError:
            pass
        except Exception:
            _logger.exception("WebSocket reader failed")
            self.close(SERVER_ERROR, "internal server error")
        finally:
            self._client_closed.set()
            with self._changed:
                if self.closed_with is None:
                    self.closed_with = NORMAL  # gone without a word: nothing is sent any more
                self._changed.notify_all()
            self._interrupt_round()

    def _receive_frames(self, pending: bytes) -> None:
        connection = self.connection
        self.sock.settimeout(self.ping_interval)
        pinged = False
        message: list[str] = []
        size = 0
        data: Optional[bytes] = pending
        while True:
            if data:
                connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, CloseConnection):
                    self._closed_by_client(event)
                    return
                if isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, BytesMessage):
                    self.close(UNSUPPORTED, "binary frames are not subscribes")
                elif isinstance(event, TextMessage) and self.closed_with is None:
                    size += len(event.data.encode("utf-8"))
                    if size > self.max_message:
                        self.close(TOO_BIG, f"a message has at most {self.max_message} bytes")
                        continue
                    message.append(event.data)
                    if event.message_finished:
                        self._subscribe("".join(message))
                        message, size = [], 0
            try:
                data = self.sock.recv(_RECV_SIZE)
            except socket.timeout:
                if pinged or self.closed_with is not None:
                    return  # no answer to the ping, or to the close frame
                self._send(Ping())
                pinged = True
                data = None
                continue
            if not data:
                return
            pinged = False

    def _closed_by_client(self, event: CloseConnection) -> None:
        if self.connection.state is ConnectionState.REMOTE_CLOSING:
            with self._changed:
                if self.closed_with is None:
                    self.closed_with = event.code
            self._send(event.response())
        elif self.connection.state is ConnectionState.OPEN:
            # wsproto found the stream broken (a protocol error): it says why.
            self.close(event.code, event.reason or "")

    def _subscribe(self, text: str) -> None:
        try:
            subscription = _read_subscribe(text, self.app.settings.max_poll_channels,
                                           self.app.settings.max_channel_name)
        except _Malformed as error:
            self.close(UNSUPPORTED, str(error))
            return
        except InvalidParams as error:
            self.close(POLICY, error.message)
            return
        with self._changed:
            if self.closed_with is not None:
                return
            self._subscription = subscription
            self._generation += 1
            self._changed.notify_all()
        self._interrupt_round()

    # -- sending ------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Begin the closing handshake (once) and end the rounds."""
        with self._changed:
            if self.closed_with is not None:
                return
            self.closed_with = code
            self._changed.notify_all()
        self._interrupt_round()
        self._send(CloseConnection(code=code, reason=reason[:120]))

    def _interrupt_round(self) -> None:
        interrupt = self._interrupt
        if interrupt is not None:
            interrupt.set()

    def _send(self, event: Event) -> None:
        with self._send_lock:
            if self.connection.state is not ConnectionState.OPEN and not (
                    isinstance(event, CloseConnection) and self.connection.state is ConnectionState.REMOTE_CLOSING):
                return
            try:
                self.sock.sendall(self.connection.send(event))
                return
            except (OSError, LocalProtocolError):
                pass
        self._abandon()

    def _abandon(self) -> None:
        """The connection broke under a write: no close handshake is
        possible, so the rounds end and the reader is woken to end too."""
        with self._changed:
            if self.closed_with is None:
                self.closed_with = ABNORMAL
            self._changed.notify_all()
        self._client_closed.set()
        self._interrupt_round()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _read_subscribe(text: str, max_channels: int, max_name: int) -> tuple[list[str], int, dict]:
    """A subscribe's (channels, last, options); its parameters are those of
    a poll, checked by the same code."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise _Malformed("a frame holds JSON") from None
    if not isinstance(frame, dict) or frame.get("event_name") != "subscribe":
        raise _Malformed('a frame is {"event_name": "subscribe", "data": {...}}')
    data = frame.get("data")
    if (not isinstance(data, dict) or type(data.get("channels")) is not list or type(data.get("last")) is not int
            or not isinstance(data.get("options", {}), dict)):
        raise _Malformed("a subscribe's data holds channels (a list), last (an integer) and perhaps options "
                         "(an object)")
    channels, last, options = controllers.poll_params(data, max_channels, max_name)
    if options.get("peek"):
        # A peek answers without waiting: round after round, a socket would spin.
        raise InvalidParams("'peek' is for a single poll: a socket's rounds wait for news")
    return channels, last, options
