"""Fan-out over WebSockets next to long-polls: N parked keep-alive polls,
then N WebSocket subscribers, on one channel of the same server in the same
run; one message is posted and the time until every client has it is
measured, per transport, over five rounds (polls re-poll between rounds,
sockets follow on their own).

Usage: python -m bench.ws_fanout [--quick|--full] [--count N]
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Optional

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Ping, Request, TextMessage

from . import client
from .cluster import bench_database
from .fanout import CHANNEL, ROUNDS, Poster, fanout_answer
from .processes import start_bus
from .report import Section, Table, median, mode_parser, percentile


class Subscriber(asyncio.Protocol):
    """One WebSocket subscribed to the channel; notes when each frame came."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.transport: Optional[asyncio.Transport] = None
        self.accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        #: (arrival time, highest id) of every frame received
        self.frames: list[tuple[float, int]] = []
        self._waiting: Optional[tuple[int, asyncio.Future]] = None
        self._text: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write(Request(host="127.0.0.1", target="/websocket"))

    def _write(self, event: object) -> None:
        assert self.transport is not None
        self.transport.write(self.ws.send(event))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted.set_result(None)
            elif isinstance(event, Ping):
                self._write(event.response())
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    entries = json.loads("".join(self._text))
                    self._text = []
                    self.frames.append((time.monotonic(), entries[-1]["id"]))
                    self._check()

    def subscribe(self, last: int) -> None:
        self._write(Message(data=json.dumps({"event_name": "subscribe",
                                             "data": {"channels": [CHANNEL], "last": last}})))

    def until(self, row_id: int) -> asyncio.Future:
        """When the frame holding ``row_id`` came (perhaps already)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting = (row_id, future)
        self._check()
        return future

    def _check(self) -> None:
        if self._waiting is None:
            return
        row_id, future = self._waiting
        for arrived, newest in self.frames:
            if newest >= row_id:
                self._waiting = None
                future.set_result(arrived)
                return


async def subscribe_many(port: int, count: int, last: int) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []
    while len(subscribers) < count:
        size = min(client.CONNECT_BATCH, count - len(subscribers))
        made = await asyncio.gather(*(loop.create_connection(Subscriber, "127.0.0.1", port) for _ in range(size)))
        batch = [protocol for _, protocol in made]
        await asyncio.gather(*(s.accepted for s in batch))
        for subscriber in batch:
            subscriber.subscribe(last)
        subscribers += batch
    return subscribers


async def _run(port: int, count: int, poster: Poster) -> tuple[list[list[float]], list[list[float]]]:
    """The rounds of the polls, then those of the sockets, on one server:
    one process may not hold 10,000 of each at once (the hard limit on open
    files is 20,000 on some machines)."""
    loop = asyncio.get_running_loop()
    warm = (await client.connect_many(port, 1))[0]  # the first poll starts the dispatcher
    await warm.send(client.poll_request([CHANNEL], 0, peek=True))
    warm.transport.close()
    last = await loop.run_in_executor(None, poster.post)
    await client.wait_position(port, last)
    polls = await client.connect_many(port, count)
    poll_rounds = []
    for _ in range(ROUNDS):
        answers = asyncio.gather(*(fanout_answer(c, last) for c in polls))
        await client.wait_parked(port, count)
        started = time.monotonic()
        last = await loop.run_in_executor(None, poster.post)
        await answers
        poll_rounds.append([c.answered_at - started for c in polls])
    for connection in polls:
        connection.transport.close()
    sockets = await subscribe_many(port, count, last)
    socket_rounds = []
    for _ in range(ROUNDS):
        await client.wait_parked(port, count)
        started = time.monotonic()
        last = await loop.run_in_executor(None, poster.post)
        arrivals = await asyncio.gather(*(s.until(last) for s in sockets))
        socket_rounds.append([t - started for t in arrivals])
    for subscriber in sockets:
        assert subscriber.transport is not None
        subscriber.transport.close()
    return poll_rounds, socket_rounds


def measure(*, quick: bool = True, count: Optional[int] = None) -> Section:
    n = count or (1000 if quick else 10_000)
    section = Section("WebSocket fan-out")
    with bench_database(durable=True) as url:
        poster = Poster(url)
        loop = client.new_loop()
        try:
            with start_bus(url) as server:
                poll_rounds, socket_rounds = loop.run_until_complete(_run(server.port, n, poster))
        finally:
            loop.close()
            poster.database.close()
    table = Table(f"Fan-out: one post to {n:,} parked long-polls, then to {n:,} WebSocket subscribers, on one "
                  "channel of one server in the same run; ms from the post until each client has it",
                  ["round", "poll p50", "poll p99", "poll last", "socket p50", "socket p99", "socket last",
                   "socket last / poll last"])
    for number, (poll_times, socket_times) in enumerate(zip(poll_rounds, socket_rounds), 1):
        polls = [t * 1000 for t in poll_times]
        sockets = [t * 1000 for t in socket_times]
        table.add(number, percentile(polls, 50), percentile(polls, 99), max(polls), percentile(sockets, 50),
                  percentile(sockets, 99), max(sockets), max(sockets) / max(polls))
    ratio = median([max(s) / max(p) for p, s in zip(poll_rounds, socket_rounds)])
    table.notes.append(f"median of the rounds' socket last / poll last: {ratio:.2f} (below 1: sockets are faster)")
    table.notes.append("a socket's round parks in the dispatcher as a poll does, and runs the same poll hook; it "
                       "saves its client the re-poll, which comes after the delivery measured here")
    section.tables.append(table)
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("ws_fanout", __doc__, "N = 10,000 of each (default: 1,000)")
    parser.add_argument("--count", type=int, default=None, help="N, overriding the mode's")
    args = parser.parse_args(argv)
    measure(quick=not args.full, count=args.count).print()


if __name__ == "__main__":
    main(sys.argv[1:])
