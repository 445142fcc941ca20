"""The load client: thousands of keep-alive HTTP/1.1 connections in one
asyncio process (uvloop when installed), with just enough HTTP to speak to
the servers under test (Content-Length framing, no chunking).

A general-purpose HTTP client would cost more CPU per request than the
server under test spends answering it; this one records the instant each
answer is complete, in the protocol callback, so the timings are the
server's and the network's, not the client's scheduling.

Every connection of the process reads into one shared receive buffer
(:class:`HttpConnection` is a buffered protocol). That is safe because the
loop hands each read to the protocol, which consumes it before the loop
reads another socket. A plain protocol gets a new ``bytes`` for every read,
up to 256 KiB, which the client then joined into each body: when 1,000
pollers lag behind the writers (bench.write_throughput) every answer is
~280 KB, and the fresh memory for each cost the client as much CPU as the
server under test, a third to a half of it in the kernel's page faults.
Whatever a read leaves unfinished (a head cut in two, the end of a body
that a count still needs) is copied back in front of the next read's bytes,
so every search runs on contiguous bytes.

An answer is received in one of two ways: :meth:`HttpConnection.send`
copies the body out and resolves to it; :meth:`HttpConnection.send_counted`
counts a poll answer's entries and finds its last id while the body streams
through the buffer, never holding it whole, for pollers that only need to
know how far they got. Counting is then most of what the client spends on
a large answer: ~90 us per 280 KB, the speed of ``bytes.count``.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, NamedTuple, Optional

from .processes import raise_open_files

#: Connections opened at once; more would overflow the listen backlog and
#: wait out SYN retransmissions (1 s, then 3 s).
CONNECT_BATCH = 500
#: The most a socket read takes at once: what uvloop reads into its own
#: buffer for a plain protocol.
READ_SIZE = 256 * 1024
#: Room in front of each read for what the previous read left unfinished;
#: an answer head longer than this fails.
CARRY_ROOM = 16 * 1024

#: The receive buffer every connection of the process shares: reads land
#: after the first CARRY_ROOM bytes. One event loop per process: a loop in
#: another thread could read into it while this one's read is unconsumed.
_BUFFER = bytearray(CARRY_ROOM + READ_SIZE)
_VIEW = memoryview(_BUFFER)
_READS = _VIEW[CARRY_ROOM:]

ENTRY = b'{"id":'
#: What every entry holds once, right after its id: counted rather than
#: ENTRY because the longer needle is found twice as fast in a long answer.
_ENTRY_MESSAGE = b',"message":{"type":'
#: The end of a body a count carries to the next read: one byte short of a
#: whole needle, so that no needle is counted twice.
_COUNT_CARRY = len(_ENTRY_MESSAGE) - 1


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop for a client process: uvloop if available."""
    raise_open_files()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Tally(NamedTuple):
    """A poll answer as :meth:`HttpConnection.send_counted` reads it."""

    status: int
    entries: int  # what count_entries() finds in the body
    last_id: Optional[int]  # what last_id() finds in the body


def _parse_head(head: bytes) -> tuple[int, int]:
    """The status and the Content-Length of an answer's head."""
    lower = head.lower()
    start = lower.find(b"content-length:")
    if start < 0:
        raise ValueError("answer without Content-Length")
    end = lower.find(b"\r\n", start)
    return int(head[9:12]), int(lower[start + 15:end if end >= 0 else len(lower)])


class HttpConnection(asyncio.BufferedProtocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self._answer: Optional[asyncio.Future] = None
        self._counting = False  # whether answers are counted, not copied out
        self._carry = b""  # what the last read left unfinished
        self._left: Optional[int] = None  # the body's bytes to come; None in a head
        self._status = 0
        self._chunks: list[bytes] = []  # the body so far, when copied out
        self._entries = 0  # the entries so far, when counted
        self._last_id: Optional[int] = None
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

    def get_buffer(self, sizehint: int) -> memoryview:
        """The shared buffer, whatever the hint: see the module docstring."""
        return _READS

    def buffer_updated(self, nbytes: int) -> None:
        """Consume a read: the bytes are in the shared buffer only until
        this returns. Bytes past an answer's body start the next answer."""
        carried = len(self._carry)
        _BUFFER[CARRY_ROOM - carried:CARRY_ROOM] = self._carry
        self._carry = b""
        position, end = CARRY_ROOM, CARRY_ROOM + nbytes
        if self._left is None:
            position -= carried  # a head's beginning: searched again with the rest
        else:
            position = self._read_body(position, end, carried)
        while position < end and not self.transport.is_closing():
            if self._left is None:
                position = self._read_head(position, end)
            else:
                position = self._read_body(position, end, 0)

    def _read_head(self, position: int, end: int) -> int:
        """Read an answer's head from ``_BUFFER[position:end]``; return
        where its body starts, or ``end`` if the head goes on."""
        stop = _BUFFER.find(b"\r\n\r\n", position, end)
        if stop < 0:
            if end - position > CARRY_ROOM:
                self._fail("answer head too long")
            else:
                self._carry = bytes(_VIEW[position:end])
            return end
        self.head = bytes(_VIEW[position:stop])
        try:
            self._status, self._left = _parse_head(self.head)
        except ValueError as error:
            self._fail(str(error))
            return end
        if not self._left:
            self._complete()
        return stop + 4

    def _read_body(self, position: int, end: int, carried: int) -> int:
        """Take the body's bytes from ``_BUFFER[position:end]``, behind the
        ``carried`` bytes of it the previous read left; return where they end."""
        stop = min(end, position + self._left)
        self._left -= stop - position
        if self._counting:
            self._count(position - carried, stop)
        else:
            self._chunks.append(bytes(_VIEW[position:stop]))
        if not self._left:
            self._complete()
        return stop

    def _count(self, start: int, stop: int) -> None:
        """Count the entries of ``_BUFFER[start:stop]`` and note its last id.
        What the previous read carried over is in front, so a needle or an
        id cut by a read's end is found whole, in the next read."""
        self._entries += _BUFFER.count(_ENTRY_MESSAGE, start, stop)
        entry = _BUFFER.rfind(ENTRY, start, stop)
        unfinished = stop  # where an entry whose id goes on begins
        if entry >= 0:
            digits = entry + len(ENTRY)
            comma = _BUFFER.find(b",", digits, stop)
            if comma >= 0:
                try:
                    self._last_id = int(_BUFFER[digits:comma])
                except ValueError:
                    self._fail("an entry id that is not a number")
            elif stop - entry < CARRY_ROOM:
                unfinished = entry
            else:
                self._fail("an entry id that does not end")
        if self._left:
            # An unfinished id holds no comma, so no needle either.
            self._carry = bytes(_VIEW[min(unfinished, max(start, stop - _COUNT_CARRY)):stop])

    def _complete(self) -> None:
        """Resolve the answer's future, and make ready for the next answer."""
        self.answered_at = time.monotonic()
        self.status = self._status
        if self._counting:
            result: Any = Tally(self._status, self._entries, self._last_id)
        else:
            result = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._left, self._chunks, self._entries, self._last_id = None, [], 0, None
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(result)

    def _fail(self, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes) -> asyncio.Future:
        """Write one request; the future resolves to the answer's body."""
        return self._send(request, counting=False)

    def send_counted(self, request: bytes) -> asyncio.Future:
        """Write one poll request; the future resolves to a :class:`Tally`
        of the answer, counted as it streams in: for pollers of the
        benchmarks' own payloads (see :func:`count_entries`) that need to
        know how far they got, not what they got."""
        return self._send(request, counting=True)

    def _send(self, request: bytes, counting: bool) -> asyncio.Future:
        assert self._answer is None, "one request at a time per connection"
        answer = asyncio.get_running_loop().create_future()
        self._answer, self._counting = answer, counting
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
