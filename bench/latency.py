"""Latency: one poller, one poster, one message at a time: post -> delivery,
next to the raw PostgreSQL floor measured in the same run (INSERT + COMMIT,
NOTIFY on a second connection, wake-up of a LISTENing psycopg2 connection).

Each post waits until the previous answer is in and the next poll has been
parked for a moment, so every figure is a parked poll being woken.

Usage: python -m bench.latency [--quick|--full] [--posts N]
"""
from __future__ import annotations

import asyncio
import select
import sys
import time
from typing import Optional

import psycopg2

from bus.database import Database
from bus.models import sendone

from . import client
from .cluster import bench_database
from .processes import ServerProcess, start_bus
from .profiling import sampled
from .report import Section, Table, Target, mode_parser, percentile

CHANNEL = "latency"
#: How long a poll is left parked before the post, so it is really waiting.
PARK_SECONDS = 0.003


def floor(url: str, posts: int) -> list[float]:
    """psycopg2 alone: the least any PostgreSQL-backed bus can take."""
    listener = psycopg2.connect(url)
    listener.autocommit = True
    writer = psycopg2.connect(url)
    notifier = psycopg2.connect(url)
    notifier.autocommit = True
    listener.cursor().execute("LISTEN imbus_floor")
    wcr, ncr = writer.cursor(), notifier.cursor()
    delays = []
    for number in range(posts):
        started = time.monotonic()
        wcr.execute("INSERT INTO bus_bus (channel, message) VALUES (%s, %s)", ("floor", '{"n":%d}' % number))
        writer.commit()
        ncr.execute("NOTIFY imbus_floor, 'floor'")
        while True:
            select.select([listener], [], [], 5)
            listener.poll()
            if listener.notifies:
                listener.notifies.clear()
                break
        delays.append(time.monotonic() - started)
    for conn in (listener, writer, notifier):
        conn.close()
    return delays


async def _bus_delays(server: ServerProcess, database: Database, posts: int) -> tuple[list[float], int]:
    connection = (await client.connect_many(server.port, 1))[0]

    def post(number: int) -> None:
        with database.transaction() as tx:
            sendone(tx, CHANNEL, "bench", {"n": number})

    post(-1)
    last = client.last_id(await connection.send(client.poll_request([CHANNEL], 0))) or 0
    delays, early = [], 0
    for number in range(posts):
        answer = connection.send(client.poll_request([CHANNEL], last))
        await asyncio.sleep(PARK_SECONDS)
        if answer.done():
            early += 1
        started = time.monotonic()
        # In this thread, blocking the loop: the answer can only come after
        # the NOTIFY that ends post(), and its arrival time is taken by the
        # protocol when the loop reads it. A worker thread would add up to a
        # GIL switch interval (5 ms) to some answers.
        post(number)
        body = await answer
        while client.last_id(body) is None:  # a wake-up for a row it had: poll again
            body = await connection.send(client.poll_request([CHANNEL], last))
        last = client.last_id(body)
        delays.append(connection.answered_at - started)
    connection.transport.close()
    return delays, early


def bus_delays(server: ServerProcess, url: str, posts: int) -> tuple[list[float], int]:
    database = Database(url, maxconn=2)
    loop = client.new_loop()
    try:
        return loop.run_until_complete(_bus_delays(server, database, posts))
    finally:
        loop.close()
        database.close()


def measure(*, quick: bool = True, posts: Optional[int] = None) -> Section:
    posts = posts or 1000
    section = Section("Latency")
    with bench_database(durable=True) as url:
        raw = floor(url, posts)
        with start_bus(url) as server:
            ours, early = bus_delays(server, url, posts)
            p50_gap = percentile(ours, 50) - percentile(raw, 50)
            p99 = percentile(ours, 99)
            profile = None
            if p50_gap > 0.001 or p99 > 0.010:
                with sampled(server.pid) as samples:
                    bus_delays(server, url, min(posts, 300))
                profile = samples.text
    table = Table(f"Latency: {posts} posts, one at a time, to one parked poller (fsync on)",
                  ["path", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 - floor ms"])
    for label, delays in (("floor: psycopg2 INSERT+COMMIT, NOTIFY -> LISTEN wake-up", raw),
                          ("bus: sendone -> /longpolling/poll answer (gevent server)", ours)):
        ms = [d * 1000 for d in delays]
        table.add(label, percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), max(ms),
                  percentile(ms, 50) - percentile(raw, 50) * 1000)
    if early:
        table.notes.append(f"{early} polls were answered before their post (not parked): counted anyway")
    section.tables.append(table)
    section.targets += [
        Target("latency p50 vs PostgreSQL floor", f"+{p50_gap * 1000:.2f} ms", "within 1 ms", p50_gap <= 0.001,
               profile if p50_gap > 0.001 else None),
        Target("latency p99", f"{p99 * 1000:.2f} ms", "< 10 ms", p99 < 0.010, profile if p99 >= 0.010 else None),
    ]
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("latency", __doc__, "same as quick: 1,000 posts")
    parser.add_argument("--posts", type=int, default=1000)
    args = parser.parse_args(argv)
    measure(quick=not args.full, posts=args.posts).print()


if __name__ == "__main__":
    main(sys.argv[1:])
