"""Fan-out and memory: N keep-alive clients park a long-poll on one channel,
one message is posted, and the time until every client has its answer is
measured (p50, p99, last) over five rounds, every client re-polling between them.

Three servers, same client, same run:

* bare: gevent pywsgi parking on one Event (bench/bare_server.py), the
  physical limit of this stack;
* bus: the library under gevent, default settings (one shared read per
  NOTIFY, answers from memory);
* odoo: the library in Odoo 15 mode (every woken poller queries the database).

Memory: server RSS per parked poll, (RSS with N parked - RSS idle) / N, each
N in a fresh server process.

Usage: python -m bench.fanout [--quick|--full]
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from bus.database import Database
from bus.models import sendone

from . import client
from .cluster import bench_database
from .processes import ServerProcess, start_bare, start_bus
from .profiling import sampled
from .report import Section, Table, Target, median, mode_parser, percentile

CHANNEL = "fan"
#: Rounds per server: the targets compare medians, since one round on a
#: shared 2-core machine can be 40 % off (the bare server's own rounds vary
#: that much); every round is shown.
ROUNDS = 5
#: Rounds sampled for a profile: one round is too short for enough samples.
PROFILED_ROUNDS = 5
LABELS = {"bare": "bare gevent pywsgi", "default": "bus (default)", "odoo": "bus, Odoo 15 mode"}


@dataclass
class Round:
    times: list[float]  # seconds from the post to each client's answer
    server_cpu: float
    client_cpu: float
    wrong: int  # answers without the posted message
    empty: int  # empty answers (spurious wake-ups) the clients re-polled after

    @property
    def last(self) -> float:
        return max(self.times)


@dataclass
class FanoutRun:
    server: str
    clients: int
    connect_seconds: float
    rss_idle_kib: int
    rss_parked_kib: int
    rounds: list[Round] = field(default_factory=list)
    profile: Optional[str] = None

    @property
    def kib_per_poll(self) -> float:
        return (self.rss_parked_kib - self.rss_idle_kib) / self.clients


class Poster:
    """Posts one message with bus.sendone, as a chat post would, and returns its id."""

    def __init__(self, url: str) -> None:
        self.database = Database(url, maxconn=2)
        # Open the pool's connection now, while this process has few sockets:
        # bus.database._is_stale checks a pooled connection with select(),
        # which refuses file descriptors above 1023.
        with self.database.transaction() as tx:
            sendone(tx, "warm-up", "bench", {})

    def post(self, channel: str = CHANNEL) -> int:
        with self.database.transaction() as tx:
            sendone(tx, channel, "bench", {"t": time.monotonic()})
        # The row is inserted at COMMIT; nobody else writes, so it is the last.
        with self.database.cursor() as cr:
            cr.execute("SELECT max(id) FROM bus_bus")
            return cr.fetchone()[0]


async def fanout_answer(connection: client.HttpConnection, last: int) -> tuple[bytes, int]:
    """Poll until an answer carries a message, as a real client re-polls after
    an empty answer (a poll woken for a row it already had answers empty).
    Returns the answer and the number of empty answers before it."""
    empty = 0
    while True:
        body = await connection.send(client.poll_request([CHANNEL], last))
        if client.last_id(body) is not None:
            return body, empty
        empty += 1


async def fanout_round(server: ServerProcess, connections: list[client.HttpConnection], last: int,
                 trigger: Callable[[], int]) -> tuple[Round, int]:
    answers = asyncio.gather(*(fanout_answer(c, last) for c in connections))
    await client.wait_parked(server.port, len(connections))
    loop = asyncio.get_running_loop()
    cpu_server, cpu_client = server.cpu_seconds(), client.client_cpu()
    started = time.monotonic()
    expected = await loop.run_in_executor(None, trigger)
    results = await answers
    times = [c.answered_at - started for c in connections]
    wrong = sum(1 for body, _ in results if client.last_id(body) != expected)
    empty = sum(count for _, count in results)
    return Round(times, server.cpu_seconds() - cpu_server, client.client_cpu() - cpu_client, wrong, empty), expected


async def _fanout(server: ServerProcess, kind: str, clients: int, trigger: Callable[[], int],
                  profile: bool) -> FanoutRun:
    if kind != "bare":
        # Warm up: the dispatcher starts, and pools open, before the idle RSS.
        warm = (await client.connect_many(server.port, 1))[0]
        await warm.send(client.poll_request([CHANNEL], 0, peek=True))
        warm.transport.close()
    rss_idle = server.rss_kib()
    started = time.monotonic()
    connections = await client.connect_many(server.port, clients)
    connect_seconds = time.monotonic() - started
    last = 0 if kind == "bare" else await asyncio.get_running_loop().run_in_executor(None, trigger)
    if kind == "default":
        # Otherwise the dispatcher may read that first row after the polls
        # parked and wake them all for nothing (see the "empty" column).
        await client.wait_position(server.port, last)
    run = FanoutRun(kind, clients, connect_seconds, rss_idle, 0)
    for number in range(ROUNDS):
        first, last = await fanout_round(server, connections, last, trigger)
        if number == 0:
            run.rss_parked_kib = server.rss_kib()
        run.rounds.append(first)
    if profile:
        with sampled(server.pid) as samples:
            for _ in range(PROFILED_ROUNDS):
                _, last = await fanout_round(server, connections, last, trigger)
        run.profile = samples.text
    for connection in connections:
        connection.transport.close()
    return run


def run_server(kind: str, url: str, sizes: list[int], profile: bool = False) -> list[FanoutRun]:
    """Every size in ``sizes`` against one server of ``kind``."""
    server = start_bare() if kind == "bare" else start_bus(url, kind)
    poster = None
    if kind == "bare":
        def trigger() -> int:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/fire").read()
            return 1
    else:
        poster = Poster(url)
        trigger = poster.post
    loop = client.new_loop()
    try:
        with server:
            return [loop.run_until_complete(_fanout(server, kind, n, trigger, profile)) for n in sizes]
    finally:
        loop.close()
        if poster is not None:
            poster.database.close()


def measure(*, quick: bool = True) -> Section:
    sizes = [1000] if quick else [1000, 5000, 10000]
    section = Section("Fan-out and memory")
    with bench_database(durable=True) as url:
        # A fresh server per size, the three kinds in turn: memory an earlier
        # size freed would otherwise hide in the next size's idle figure,
        # and a slow spell of the machine would hit one kind only.
        runs: dict[str, list[FanoutRun]] = {kind: [] for kind in ("bare", "default", "odoo")}
        for n in sizes:
            for kind in runs:
                runs[kind] += run_server(kind, url, [n])
        fanout = Table("Fan-out: one post, N parked keep-alive clients on one channel; "
                       "ms from the post until each client has its answer",
                       ["server", "N", "round", "p50 ms", "p99 ms", "last ms", "last / bare",
                        "server CPU ms", "client CPU ms", "wrong", "empty"])
        memory = Table("Memory: server RSS per parked poll", ["server", "N", "idle RSS MiB",
                       "parked RSS MiB", "KiB per parked poll", "ratio to bare", "connect s"])
        worst: dict[tuple[str, int], float] = {}
        for index, n in enumerate(sizes):
            bare = runs["bare"][index]
            for kind in ("bare", "default", "odoo"):
                run = runs[kind][index]
                for number, rnd in enumerate(run.rounds, 1):
                    ratio = rnd.last / bare.rounds[number - 1].last
                    ms = [t * 1000 for t in rnd.times]
                    fanout.add(LABELS[kind], n, number, percentile(ms, 50), percentile(ms, 99), max(ms), ratio,
                               rnd.server_cpu * 1000, rnd.client_cpu * 1000, rnd.wrong, rnd.empty)
                    worst[kind, n] = max(worst.get((kind, n), 0.0), ratio)
                memory.add(LABELS[kind], n, run.rss_idle_kib / 1024, run.rss_parked_kib / 1024, run.kib_per_poll,
                           run.kib_per_poll / bare.kib_per_poll, run.connect_seconds)
        fanout.notes.append("wrong: answers whose last id is not the posted message; empty: empty answers "
                            "the clients re-polled after (a poll woken for a row it already had)")
        fanout.notes.append("bare and bus are triggered differently: bare by GET /fire, bus by a "
                            "bus.sendone commit (INSERT + COMMIT + NOTIFY) from the bench process")
        fanout.notes.append("last / bare: against the bare server's round of the same number")
        section.tables += [fanout, memory]

        def typical(kind: str, index: int) -> float:
            return median([rnd.last for rnd in runs[kind][index].rounds])

        # The targets are set at the largest N (10,000 in full mode, as #4
        # words them), on the median round; the worst round and the smaller
        # sizes are shown next to it.
        top = sizes[-1]
        smaller = [n for n in sizes if n != top]
        ratios = [typical("default", i) / typical("bare", i) for i in range(len(sizes))]
        context = f"; worst round {worst['default', top]:.2f}"
        if smaller:
            context += f"; at {', '.join(f'{n:,}' for n in smaller)}: " + ", ".join(f"{r:.2f}" for r in ratios[:-1])
        speedup = typical("odoo", -1) / typical("default", -1)
        slowest = min(rnd_o.last / rnd_d.last for rnd_o, rnd_d in zip(runs["odoo"][-1].rounds, runs["default"][-1].rounds))
        wrong = sum(rnd.wrong for kind in ("default", "odoo") for run in runs[kind] for rnd in run.rounds)
        memory_ratios = [run.kib_per_poll / runs["bare"][i].kib_per_poll for i, run in enumerate(runs["default"])]
        memory_ratio = memory_ratios[-1]
        memory_context = (f"; at {', '.join(f'{n:,}' for n in smaller)}: "
                          + ", ".join(f"{r:.2f}" for r in memory_ratios[:-1])) if smaller else ""
        section.targets += [
            Target(f"fan-out to {top:,} polls, last answer vs bare pywsgi",
                   f"{ratios[-1]:.2f} x bare (median of {ROUNDS} rounds){context}", "<= 1.25 x",
                   ratios[-1] <= 1.25),
            Target(f"fan-out to {top:,} polls vs Odoo 15 mode",
                   f"{speedup:.1f} x faster (median; slowest round {slowest:.1f} x)", ">= 2 x faster", speedup >= 2),
            Target("every answer carries the posted message", f"{wrong} wrong", "0", wrong == 0),
            Target(f"memory per parked poll at {top:,} vs bare", f"{memory_ratio:.2f} x bare{memory_context}",
                   "<= 1.25 x", memory_ratio <= 1.25),
        ]
        if not section.targets[0].met and not quick:  # a profile costs another run: full mode only
            try:
                section.targets[0].profile = run_server("default", url, [sizes[-1]], profile=True)[0].profile
            except Exception as exc:  # the figures above stand without it
                section.targets[0].profile = f"(profiling failed: {exc!r})"
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("fanout", __doc__, "N = 1,000, 5,000 and 10,000 (default: 1,000)")
    args = parser.parse_args(argv)
    measure(quick=not args.full).print()


if __name__ == "__main__":
    main(sys.argv[1:])
