"""HTTP over raw sockets, for tests that must see exactly what a server
writes, and when it closes the connection: what an HTTP client library
hides (it reconnects, it reframes, it gives up)."""
from __future__ import annotations

import select
import socket
import time
from typing import Optional

POLL = b"/longpolling/poll"


def request(method: bytes, path: bytes, *header_lines: bytes, body: bytes = b"",
            version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"%s %s %s" % (method, path, version), *header_lines]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def health(*header_lines: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return request(b"GET", b"/longpolling/health", *header_lines, version=version)


def poll_body(channels: list[str], last: int) -> bytes:
    names = ",".join('"%s"' % name for name in channels)
    return b'{"jsonrpc":"2.0","method":"call","id":1,"params":{"channels":[%s],"last":%d}}' % (names.encode(), last)


def post_poll(body: bytes, *header_lines: bytes) -> bytes:
    return request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Type: application/json",
                   b"Content-Length: %d" % len(body), *header_lines, body=body)


class Answer:
    """One answer as read off the wire."""

    def __init__(self, status: int, fields: dict[str, str], body: bytes) -> None:
        self.status = status
        self.fields = fields
        self.body = body

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.fields}, {self.body[:120]!r})"


class Connection:
    """One client connection; what is read past an answer is kept, so that a
    second answer (a request smuggled in a body, say) is never lost."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.reset = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def receive(self) -> bool:
        """Read what the server sent into :attr:`buffer`; False at the end
        of the connection."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            data = b""
        self.buffer += data
        return bool(data)

    def read_answer(self) -> Optional[Answer]:
        """The next answer, or None if the connection ends first."""
        while b"\r\n\r\n" not in self.buffer:
            if not self.receive():
                return None
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(fields.get("content-length", 0))
        while len(self.buffer) < length:
            if not self.receive():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(status_line.split()[1]), fields, body)

    def ended(self) -> bool:
        """Whether the server has ended the connection with nothing more
        sent, without waiting."""
        if self.buffer:
            return False
        if not select.select([self.sock], [], [], 0)[0]:
            return False
        return not self.receive()

    def wait_ended(self, timeout: float) -> Optional[float]:
        """``time.monotonic()`` when the server ended the connection, or None
        if it is still open after ``timeout`` seconds. What the server sends
        before that stays in :attr:`buffer`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            if not self.receive():
                return time.monotonic()
        return None
