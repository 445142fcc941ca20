"""The load client's framing and streaming count (bench/client.py): answers
cut at every byte, pipelined, interleaved with another connection's reads
through the shared buffer, and once over real sockets."""
import asyncio
import random
from typing import Any

from bench import client

ENTRIES = [b'{"id":%d,"message":{"type":"bench","payload":{"t":%f,"w":3}}}' % (n, n / 7)
           for n in (7, 8, 123456, 123457, 123456789012345678)]


def body(entries: list[bytes]) -> bytes:
    return b'{"jsonrpc": "2.0", "id": 1, "result": [' + b",".join(entries) + b"]}"


def answer(payload: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(payload)) + payload


def expected(payload: bytes, counting: bool) -> Any:
    if counting:
        return client.Tally(200, client.count_entries(payload), client.last_id(payload))
    return payload


class Transport:
    """Enough of a transport for a protocol fed by hand."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def connection() -> client.HttpConnection:
    made = client.HttpConnection()
    made.connection_made(Transport())
    return made


def feed(connection: client.HttpConnection, data: bytes) -> None:
    """One read, as the loop does it: into the protocol's buffer."""
    connection.get_buffer(-1)[:len(data)] = data
    connection.buffer_updated(len(data))


def send(connection: client.HttpConnection, counting: bool) -> asyncio.Future:
    return connection.send_counted(b"") if counting else connection.send(b"")


def test_every_cut_of_two_pipelined_answers() -> None:
    """The first answer cut at every byte, its end read with the second's
    beginning (cut at every few bytes), then the second's rest."""
    first, second = body(ENTRIES), body(ENTRIES[:2])
    stream = answer(first) + answer(second)
    boundary = len(answer(first))

    async def run(counting: bool) -> None:
        for cut in range(1, boundary):
            for second_cut in range(boundary + 1, len(stream), 5):
                conn = connection()
                answered = send(conn, counting)
                feed(conn, stream[:cut])
                assert not answered.done()
                feed(conn, stream[cut:second_cut])
                assert answered.result() == expected(first, counting)
                answered = send(conn, counting)
                feed(conn, stream[second_cut:])
                assert answered.result() == expected(second, counting)
                assert conn.status == 200 and conn.head.startswith(b"HTTP/1.1 200 OK\r\n")

    for counting in (True, False):
        asyncio.run(run(counting))


def test_interleaved_connections_in_random_reads() -> None:
    """A counting and a copying connection whose reads of 1 to 100 bytes
    alternate at random through the shared buffer, over answers with and
    without entries (each read within one answer: each answer is asked for
    once the previous one is in)."""
    payloads = [body(ENTRIES), body([]), b"", body(ENTRIES[::-1]), body(ENTRIES[1:3])]
    answers = [answer(p) for p in payloads]
    stream = b"".join(answers)
    ends = [sum(map(len, answers[:n + 1])) for n in range(len(answers))]
    modes = (True, False)
    rng = random.Random(1)

    async def run() -> None:
        for _ in range(200):
            conns = [connection() for _ in modes]
            answered = [send(conn, counting) for conn, counting in zip(conns, modes)]
            positions = [0 for _ in modes]
            results: list[list[Any]] = [[] for _ in modes]
            while min(positions) < len(stream):
                i = rng.randrange(len(modes))
                if positions[i] == len(stream):
                    continue
                end = next(e for e in ends if e > positions[i])
                size = min(rng.randint(1, 100), end - positions[i])
                feed(conns[i], stream[positions[i]:positions[i] + size])
                positions[i] += size
                if answered[i].done():
                    results[i].append(answered[i].result())
                    answered[i] = send(conns[i], modes[i])
            for i, counting in enumerate(modes):
                assert results[i] == [expected(p, counting) for p in payloads]

    asyncio.run(run())


def test_over_sockets() -> None:
    """Answers written in odd pieces by a real server, to the client's loop."""
    payload = body(ENTRIES * 2000)  # ~770 KB: several reads of up to 256 KiB
    stream = answer(payload)
    served = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await reader.readuntil(b"\r\n\r\n")
            for start in range(0, len(stream), 65_521):
                writer.write(stream[start:start + 65_521])
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.close()
        served.set()

    async def run() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = (await client.connect_many(port, 1))[0]
        assert await conn.send_counted(client.get_request("/")) == expected(payload, True)
        assert await conn.send(client.get_request("/")) == payload
        await served.wait()
        conn.transport.close()
        server.close()
        await server.wait_closed()

    loop = client.new_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
