"""The load client: thousands of keep-alive HTTP/1.1 connections in one
asyncio process (uvloop when installed), with just enough HTTP to speak to
the servers under test (Content-Length framing, no chunking).

A general-purpose HTTP client would cost more CPU per request than the
server under test spends answering it; this one records the instant each
answer is complete, in the protocol callback, so the timings are the
server's and the network's, not the client's scheduling.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

from .processes import raise_open_files

#: Connections opened at once; more would overflow the listen backlog and
#: wait out SYN retransmissions (1 s, then 3 s).
CONNECT_BATCH = 500


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop for a client process: uvloop if available."""
    raise_open_files()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self._head = bytearray()  # an answer's head, until it is complete
        # The body received so far, as the chunks the loop handed over: joined
        # once when complete. Appending them to a bytearray and slicing it
        # out cost 25 times more on a 150 KB answer (a fan-out of a backlog).
        self._chunks: list[Any] = []
        self._received = 0
        self._answer: Optional[asyncio.Future] = None
        self._length: Optional[int] = None
        self._status = 0
        #: time.monotonic() at which the last complete answer arrived.
        self.answered_at = 0.0
        self.status = 0
        #: The status line and headers of the last answer.
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self._length is None:
            if self._head:
                self._head += data
                data = bytes(self._head)
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if not self._head:
                    self._head += data
                return
            self._head = bytearray()
            self.head = data[:end]
            head = self.head.lower()
            self._status = int(head[9:12])
            start = head.find(b"content-length:")
            if start < 0:
                self._fail("answer without Content-Length")
                return
            line_end = head.find(b"\r\n", start)
            self._length = int(head[start + 15:line_end if line_end >= 0 else len(head)])
            data = memoryview(data)[end + 4:]
        self._chunks.append(data)
        self._received += len(data)
        if self._received < self._length:
            return
        joined = b"".join(self._chunks)
        body, rest = (joined, b"") if len(joined) == self._length else (joined[:self._length], joined[self._length:])
        self._chunks, self._received, self._length = [], 0, None
        self.answered_at = time.monotonic()
        self.status = self._status
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(body)
        if rest:
            self.data_received(rest)

    def _fail(self, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes) -> asyncio.Future:
        """Write one request; the future resolves to the answer's body."""
        assert self._answer is None, "one request at a time per connection"
        answer = asyncio.get_running_loop().create_future()
        self._answer = answer
        self.transport.write(request)
        return answer


async def connect_many(port: int, count: int, batch: int = CONNECT_BATCH) -> list[HttpConnection]:
    """``count`` connections to 127.0.0.1:``port``, opened ``batch`` at a time."""
    loop = asyncio.get_running_loop()
    connections: list[HttpConnection] = []
    while len(connections) < count:
        size = min(batch, count - len(connections))
        made = await asyncio.gather(*(loop.create_connection(HttpConnection, "127.0.0.1", port)
                                      for _ in range(size)))
        connections.extend(protocol for _, protocol in made)
    return connections


def post_request(path: str, body: bytes, cookie: bytes = b"") -> bytes:
    extra = b"Cookie: %s\r\n" % cookie if cookie else b""
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), extra, len(body))) + body


def rpc_request(path: str, params: dict, cookie: bytes = b"") -> bytes:
    """A JSON-RPC 2.0 ``call`` as Odoo's web client sends it."""
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1, "params": params}).encode()
    return post_request(path, body, cookie)


def set_cookie(head: bytes, name: bytes) -> bytes:
    """``name=value`` from an answer's Set-Cookie header, for the next requests."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            pair = line.split(b":", 1)[1].strip().split(b";", 1)[0]
            if pair.startswith(name + b"="):
                return pair
    raise RuntimeError(f"no {name.decode()} cookie in the answer")


def get_request(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode()


def poll_request(channels: list[str], last: int, **options: Any) -> bytes:
    """A JSON-RPC ``/longpolling/poll`` call, as Odoo 15's web client sends it."""
    return rpc_request("/longpolling/poll", {"channels": channels, "last": last, "options": options})


ENTRY = b'{"id":'
#: What every entry holds once, right after its id: counted rather than
#: ENTRY because the longer needle is found twice as fast in a long answer.
_ENTRY_MESSAGE = b',"message":{"type":'


def count_entries(body: bytes) -> int:
    """How many entries a poll answer holds, without decoding it. Only for
    the benchmarks' own payloads, which never hold that text themselves."""
    return body.count(_ENTRY_MESSAGE)


def last_id(body: bytes) -> Optional[int]:
    """The id of the last entry of a poll answer, without decoding it all
    (entries are ``{"id":N,"message":...}`` in id order). Only for answers
    whose payloads never hold ``{"id":`` themselves, as the benchmarks' own
    payloads; use :func:`newest_id` for anything else."""
    start = body.rfind(ENTRY)
    if start < 0:
        return None
    start += len(ENTRY)
    return int(body[start:body.index(b",", start)])


def newest_id(body: bytes) -> Optional[int]:
    """The id of the last entry of any poll answer (decodes it)."""
    found = entries(body)
    return found[-1]["id"] if found else None


def entries(body: bytes) -> list[dict[str, Any]]:
    """Every entry of a poll answer; raises on a JSON-RPC error."""
    answer = json.loads(body)
    if "error" in answer:
        raise RuntimeError(f"poll failed: {answer['error']}")
    return answer["result"]


async def fetch_json(port: int, path: str) -> Any:
    """One GET on a fresh connection, for the servers' stats routes."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(HttpConnection, "127.0.0.1", port)
    try:
        return json.loads(await protocol.send(get_request(path)))
    finally:
        transport.close()


async def wait_parked(port: int, count: int, path: str = "/bench/stats", timeout: float = 120.0) -> float:
    """Wait until the server reports ``count`` parked polls; return how long it took."""
    started = time.monotonic()
    while True:
        stats = await fetch_json(port, path)
        if stats["waiters"] >= count:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"only {stats['waiters']} of {count} polls parked after {timeout}s")
        await asyncio.sleep(0.02)


async def wait_position(port: int, row_id: int, timeout: float = 30.0) -> None:
    """Wait until the server's dispatcher has read up to ``row_id``, so a
    measurement starts from a settled server."""
    started = time.monotonic()
    while (await fetch_json(port, "/bench/stats"))["position"] < row_id:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the server did not read up to id {row_id} within {timeout}s")
        await asyncio.sleep(0.01)


def client_cpu() -> float:
    """This process's CPU time, reported next to the server's."""
    return time.process_time()
