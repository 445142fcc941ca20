"""A WebSocket client for the tests, framed by wsproto as the server is:
real sockets, the handshake checked (accept token and all) by wsproto."""
from __future__ import annotations

import json
import socket
import time
from collections import deque
from typing import Any, Optional
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Event, Message, Ping, Request, TextMessage


class SocketClosed(AssertionError):
    """The server closed the socket where a frame was expected."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the socket closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class WebSocketClient:
    """One open ``/websocket``; frames are read with generous deadlines."""

    def __init__(self, url: str, *, origin: Optional[str] = None, cookie: Optional[str] = None,
                 path: str = "/websocket") -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = []
        if origin is not None:
            headers.append((b"Origin", origin.encode()))
        if cookie is not None:
            headers.append((b"Cookie", cookie.encode()))
        self._events: deque[Event] = deque()
        self.closed: Optional[CloseConnection] = None
        self.pings_answered = 0
        self._send(Request(host=parts.netloc, target=path, extra_headers=headers))
        event = self._next_event(30)
        if not isinstance(event, AcceptConnection):
            raise AssertionError(f"the upgrade was refused: {event!r}")

    def _send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def _next_event(self, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while not self._events:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no frame within {timeout}s"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self._send(event.response())
                    self.pings_answered += 1
                else:
                    self._events.append(event)
        return self._events.popleft()

    def send_text(self, text: str) -> None:
        self._send(Message(data=text))

    def send_bytes(self, data: bytes) -> None:
        self._send(Message(data=data))

    def subscribe(self, channels: list, last: int, **options: Any) -> None:
        self.send_text(json.dumps({"event_name": "subscribe",
                                   "data": {"channels": channels, "last": last, "options": options}}))

    def receive(self, timeout: float = 30) -> list[dict]:
        """The next frame: a notification array (never empty)."""
        text = []
        while True:
            event = self._next_event(timeout)
            if isinstance(event, CloseConnection):
                self._closing(event)
                raise SocketClosed(event.code, event.reason or "")
            assert isinstance(event, TextMessage), event
            text.append(event.data)
            if event.message_finished:
                entries = json.loads("".join(text))
                assert isinstance(entries, list) and entries, entries
                return entries

    def close_code(self, timeout: float = 30) -> tuple[int, str]:
        """The code and reason the server closes with; any frame before it fails."""
        event = self._next_event(timeout)
        assert isinstance(event, CloseConnection), f"a frame instead of a close: {event!r}"
        self._closing(event)
        return event.code, event.reason or ""

    def _closing(self, event: CloseConnection) -> None:
        self.closed = event
        try:
            self._send(event.response())
        except OSError:
            pass

    def close(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            try:
                self._send(CloseConnection(code=1000))
            except OSError:
                pass
        self.sock.close()


