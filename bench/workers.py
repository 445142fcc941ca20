"""Workers on one port: fan-out to parked polls on ONE port served by one
worker process, and by two sharing the port with ``SO_REUSEPORT``, as
``python -m bus serve --workers 2`` runs them (bus/workers.py), each worker
with its own dispatcher. Time per message: post -> every parked poll
answered, median of several posts after a warm-up post.

Both set-ups are up at once, on one database, their polls on a channel of
their own, and the posts alternate between them (1, 2, 2, 1, 1, 2, ...): a
slow spell of the shared machine then hits both alike, and the figure is
their ratio in one run. A worker is bench/app_server.py, started as the
supervisor starts it (``--reuse-port``), plus a port of its own for its
counters, since a request to the shared port lands on either worker: the
bench sums the parked polls over every worker before each post and waits
for every worker's dispatcher to have read the last one.

Which worker a connection reaches is the kernel's choice (a hash of the
connection's addresses and ports): the polls each worker holds are shown.

Usage: python -m bench.workers [--quick|--full] [--polls N] [--posts K]
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from . import client
from .cluster import bench_database, postmaster_cpu_seconds, postmaster_pid
from .fanout import Poster
from .processes import ServerProcess, cpu_seconds, free_port, raise_open_files, start_bus
from .profiling import sampled
from .report import Section, Table, Target, median, mode_parser

MP = multiprocessing.get_context("fork")
#: Load-client processes per set-up, so that the client side can use both
#: cores as the two workers do; each holds an equal share of the polls.
CLIENTS = 2
#: Seconds a client process may stay silent before the bench gives up.
QUIET = 300.0
TARGET = 1.6
#: Posts to 2 workers sampled for a profile when the target is missed.
PROFILED_POSTS = 3
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Report(NamedTuple):
    """What a client process says once every poll of a round is answered."""

    first: float  # time.monotonic() of its first answer
    answered_at: float  # time.monotonic() of its last answer
    failures: int
    ids: dict  # last id of each answer -> how many answers
    empty: int  # empty answers re-polled after (spurious wake-ups)
    cpu: float  # its CPU seconds from the polls sent to the last answer


def _client_process(port: int, count: int, channel: str, pipe: Any) -> None:
    loop = client.new_loop()
    try:
        loop.run_until_complete(_client(port, count, channel, pipe))
    finally:
        loop.close()


async def _client(port: int, count: int, channel: str, pipe: Any) -> None:
    """Park ``count`` polls on ``port`` each round the bench asks for, after
    the id it sends; report once every one of them has its answer."""
    loop = asyncio.get_running_loop()
    connections = await client.connect_many(port, count)
    pipe.send("connected")
    while True:
        last = await loop.run_in_executor(None, pipe.recv)
        if last is None:
            break
        answers = Answers(connections, channel, last)
        cpu = client.client_cpu()
        pipe.send("sent")
        await answers.done
        times = [c.answered_at for c in connections]
        pipe.send(Report(min(times), max(times), answers.failures, dict(answers.ids),
                         answers.empty, client.client_cpu() - cpu))
    for connection in connections:
        connection.transport.close()


class Answers:
    """One round's polls, one per connection, followed by callbacks on their
    answers rather than by a task per poll (bench.fanout's way): that costs
    the client ~2.5 us less CPU per answer, out of ~14, on cores it shares
    with the workers under test. An empty answer (a poll woken for a row it
    already had) is re-polled, as a real client does."""

    def __init__(self, connections: list[client.HttpConnection], channel: str, last: int) -> None:
        self.request = client.poll_request([channel], last)
        self.left = len(connections)
        self.done = asyncio.get_running_loop().create_future()
        self.ids: Counter = Counter()  # last id of each answer -> how many
        self.failures = 0
        self.empty = 0
        for connection in connections:
            self._poll(connection)

    def _poll(self, connection: client.HttpConnection) -> None:
        connection.send(self.request).add_done_callback(lambda answer: self._answered(connection, answer))

    def _answered(self, connection: client.HttpConnection, answer: asyncio.Future) -> None:
        try:
            got = client.last_id(answer.result())
        except (ConnectionError, ValueError):
            self.failures += 1
        else:
            if got is None:
                self.empty += 1
                self._poll(connection)
                return
            self.ids[got] += 1
        self.left -= 1
        if not self.left:
            self.done.set_result(None)


def _receive(pipe: Any) -> Any:
    """The next message of a client process; an error if it died or went quiet."""
    if not pipe.poll(QUIET):
        raise RuntimeError(f"a client process said nothing for {QUIET:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError("a client process died (its error is printed above)") from None


def _stats(server: ServerProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.stats_port}/bench/stats", timeout=30) as answer:
        return json.load(answer)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def _postgres_cpu(postmaster: Optional[int]) -> float:
    return 0.0 if postmaster is None else postmaster_cpu_seconds(postmaster)


@dataclass
class Round:
    seconds: float  # post -> the last poll answered
    first: float  # post -> the first poll answered: the part no worker shares
    workers_cpu: list[float]  # each worker's CPU seconds
    clients_cpu: float
    postgres_cpu: float
    machine_cpu: float  # every process on the machine, these included
    wall: float  # the span the CPU figures cover
    waiters: list[int]  # polls parked on each worker before the post
    errors: int
    empty: int


@dataclass
class Setup:
    """One port, its workers, and the client processes holding its polls."""

    name: str
    channel: str
    polls: int
    workers: list[ServerProcess] = field(default_factory=list)
    clients: list[tuple[Any, Any]] = field(default_factory=list)
    last: int = 0
    rounds: list[Round] = field(default_factory=list)

    def start(self, url: str, count: int) -> None:
        port = free_port()
        for _ in range(count):
            self.workers.append(start_bus(url, port=port, shared=True))
        for index in range(CLIENTS):
            ours, theirs = MP.Pipe()
            share = self.polls // CLIENTS + (index < self.polls % CLIENTS)
            process = MP.Process(target=_client_process, args=(port, share, self.channel, theirs))
            process.start()
            theirs.close()  # so that a dead client reads as EOF here, not as silence
            self.clients.append((process, ours))

    def wait_connected(self) -> None:
        for _, pipe in self.clients:
            if _receive(pipe) != "connected":
                raise RuntimeError("a client process did not connect")

    def settle(self, timeout: float = 120.0) -> list[int]:
        """Wait until the workers hold every poll between them and each has
        read up to the last post (else it could read that row later and wake
        them all for nothing); return the polls each holds."""
        deadline = time.monotonic() + timeout
        while True:
            stats = [_stats(worker) for worker in self.workers]
            waiters = [s["waiters"] for s in stats]
            if sum(waiters) >= self.polls and all(s["position"] >= self.last for s in stats):
                return waiters
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {waiters} polls parked of {self.polls}, positions "
                                   f"{[s['position'] for s in stats]} for id {self.last}, after {timeout:.0f} s")
            time.sleep(0.02)

    def round(self, poster: Poster, postmaster: Optional[int]) -> Round:
        """One post, timed until every parked poll has it; ``postmaster``:
        the database server's process, for its CPU (None: not on this machine)."""
        for _, pipe in self.clients:
            pipe.send(self.last)
        for _, pipe in self.clients:
            if _receive(pipe) != "sent":
                raise RuntimeError("a client process failed to send its polls")
        waiters = self.settle()
        workers_before = [cpu_seconds(worker.pid) for worker in self.workers]
        postgres_before, machine_before = _postgres_cpu(postmaster), machine_busy_seconds()
        began = time.monotonic()
        self.last = poster.post(self.channel)
        reports = [_receive(pipe) for _, pipe in self.clients]
        wall = time.monotonic() - began
        machine = machine_busy_seconds() - machine_before
        postgres = _postgres_cpu(postmaster) - postgres_before
        errors = sum(r.failures for r in reports) + sum(n for r in reports for got, n in r.ids.items()
                                                        if got != self.last)
        return Round(max(r.answered_at for r in reports) - began, min(r.first for r in reports) - began,
                     [cpu_seconds(w.pid) - b for w, b in zip(self.workers, workers_before)],
                     sum(r.cpu for r in reports), postgres, machine, wall, waiters, errors,
                     sum(r.empty for r in reports))

    def stop(self) -> None:
        for process, pipe in self.clients:
            if process.is_alive():
                try:
                    pipe.send(None)
                except OSError:
                    pass
        for process, _ in self.clients:
            process.join(30)
            if process.is_alive():
                process.kill()
        for worker in self.workers:
            worker.stop()


def compare(url: str, polls: int, posts: int, profile: bool = False) -> tuple[Setup, Setup, str]:
    """``posts`` timed posts to each set-up, alternating, after a warm-up post
    each; then, if ``profile`` and 2 workers missed the target, a profile of
    a worker and of a load client during more posts to 2 workers."""
    one, two = Setup("1 worker", "fan-1", polls), Setup("2 workers", "fan-2", polls)
    postmaster = postmaster_pid(url)
    poster = Poster(url)
    try:
        for setup, workers in ((one, 1), (two, 2)):
            setup.start(url, workers)
            setup.wait_connected()
            setup.last = poster.post(setup.channel)
        for setup in (one, two):
            setup.round(poster, postmaster)  # warm-up: dispatchers started, polls parked once
        for number in range(posts):
            for setup in (one, two) if number % 2 == 0 else (two, one):
                setup.rounds.append(setup.round(poster, postmaster))
        text = ""
        if profile and speed_up(one, two) < TARGET:
            with sampled(two.workers[0].pid) as worker, sampled(two.clients[0][0].pid) as load:
                for _ in range(PROFILED_POSTS):
                    two.round(poster, postmaster)
            text = f"a worker of 2:\n{worker.text}\n\na load client of 2 workers' set-up:\n{load.text}"
        return one, two, text
    finally:
        poster.database.close()
        one.stop()
        two.stop()


def speed_up(one: Setup, two: Setup) -> float:
    """How much faster 2 workers answered every poll than 1: the ratio of the medians."""
    return median([r.seconds for r in one.rounds]) / median([r.seconds for r in two.rounds])


def measure(*, quick: bool = True, polls: int | None = None, posts: int | None = None) -> Section:
    polls = polls or (2000 if quick else 10000)
    posts = posts or (5 if quick else 7)
    limit = raise_open_files()
    if limit < polls // CLIENTS + 1000:
        raise RuntimeError(f"an open-files limit of {limit} is too low for {polls} polls")
    with bench_database(durable=True) as url:
        # A profile costs more posts: full mode only.
        one, two, profile = compare(url, polls, posts, profile=not quick)
    section = Section("Workers on one port")
    ratio = speed_up(one, two)
    cpu = _cpu_table(one, two)
    cpu.notes += _limits(one, two, ratio)
    section.tables += [_times_table(one, two, polls, posts, quick), cpu]
    pairs = median([a.seconds / b.seconds for a, b in zip(one.rounds, two.rounds)])
    errors = sum(r.errors for setup in (one, two) for r in setup.rounds)
    section.targets += [
        Target(f"fan-out to {polls:,} parked polls on one port, 2 workers vs 1 (same run)",
               f"{ratio:.2f} x faster (medians of {posts} posts each; median over neighbouring posts "
               f"{pairs:.2f} x)", f">= {TARGET} x faster", ratio >= TARGET, profile or None),
        Target(f"{polls:,} polls on one port, 1 and 2 workers: every answer carries the post",
               f"{errors} errors", "0", errors == 0),
    ]
    return section


def _times_table(one: Setup, two: Setup, polls: int, posts: int, quick: bool) -> Table:
    table = Table(f"Workers on one port: time per message (post -> last of {polls:,} parked polls answered), "
                  f"{posts} posts each, alternating", ["set-up", "parked polls per worker", "median ms",
                                                       "min ms", "max ms", "first answer ms", "errors",
                                                       "empty", "speed-up on 1 worker"])
    base = median([r.seconds for r in one.rounds])
    for setup in (one, two):
        times = [r.seconds for r in setup.rounds]
        per_worker = " + ".join(f"{median([r.waiters[i] for r in setup.rounds]):,.0f}"
                                for i in range(len(setup.workers)))
        table.add(setup.name, per_worker, median(times) * 1000, min(times) * 1000, max(times) * 1000,
                  median([r.first for r in setup.rounds]) * 1000, sum(r.errors for r in setup.rounds),
                  sum(r.empty for r in setup.rounds), base / median(times))
    pairs = [a.seconds / b.seconds for a, b in zip(one.rounds, two.rounds)]
    table.notes.append("speed-up of each post to 1 worker over the neighbouring post to 2 workers: "
                       + ", ".join(f"{p:.2f}" for p in pairs))
    table.notes.append("parked polls per worker: the median over the posts of what each worker reported "
                       "before the post; the kernel spreads the connections over the workers' sockets")
    table.notes.append("first answer: median ms from the post to the first poll answered (commit, NOTIFY, the "
                       "dispatcher's read), which a second worker does not shorten")
    table.notes.append(f"{CLIENTS} load-client processes per set-up; both set-ups up at once on one database, "
                       "their polls on channels of their own, posts alternating between them")
    if quick:
        table.notes.append(f"quick mode: {polls:,} parked polls (full mode: 10,000)")
    return table


def _cpu_table(one: Setup, two: Setup) -> Table:
    table = Table("Workers on one port: CPU per post (mean over the timed posts, ms), from the post to the "
                  "clients' last report", ["set-up", "each worker", "clients", "PostgreSQL", "rest of machine",
                                           "span ms", "cores busy"])
    for setup in (one, two):
        cpu = CpuPerPost.of(setup)
        total = sum(cpu.workers) + cpu.clients + cpu.postgres + cpu.rest
        table.add(setup.name, " + ".join(f"{w * 1000:.0f}" for w in cpu.workers), cpu.clients * 1000,
                  cpu.postgres * 1000, cpu.rest * 1000, cpu.span * 1000, total / cpu.span)
    table.notes.append("from /proc, in 10-ms clock ticks: one post's figures are coarse, their mean is not; "
                       "rest of machine: the bench itself and whatever else runs on the same cores")
    return table


@dataclass
class CpuPerPost:
    """A set-up's mean CPU seconds per timed post."""

    workers: list[float]
    clients: float
    postgres: float
    rest: float  # every other process on the machine
    span: float

    @classmethod
    def of(cls, setup: Setup) -> CpuPerPost:
        rounds = setup.rounds

        def mean(value: Any) -> float:
            return sum(value(r) for r in rounds) / len(rounds)

        workers = [mean(lambda r: r.workers_cpu[i]) for i in range(len(setup.workers))]
        clients, postgres = mean(lambda r: r.clients_cpu), mean(lambda r: r.postgres_cpu)
        # Each figure is rounded to clock ticks on its own: on a quiet
        # machine their difference can fall a little below zero.
        rest = max(0.0, mean(lambda r: r.machine_cpu) - sum(workers) - clients - postgres)
        return cls(workers, clients, postgres, rest, mean(lambda r: r.wall))

    def floor(self, cores: int) -> float:
        """The shortest a post could take on ``cores`` idle cores: the
        busiest worker's CPU, or all of this set-up's CPU spread evenly."""
        return max(max(self.workers), (sum(self.workers) + self.clients + self.postgres) / cores)


def _limits(one: Setup, two: Setup, ratio: float) -> list[str]:
    """What the CPU figures say bounds the speed-up, and what else ran."""
    cores = len(os.sched_getaffinity(0))
    single, double = CpuPerPost.of(one), CpuPerPost.of(two)
    ceiling = single.floor(cores) / double.floor(cores)
    waiters = [median([r.waiters[i] for r in two.rounds]) for i in range(len(two.workers))]
    notes = [
        f"the CPU these posts took allows 2 workers at most {ceiling:.2f} x on {cores} idle cores: 1 worker "
        f"needs its {single.workers[0] * 1000:.0f} ms on one core, while 2 workers' "
        f"{' + '.join(f'{w * 1000:.0f}' for w in double.workers)} ms share the {cores} cores with the load "
        f"clients' {double.clients * 1000:.0f} ms and PostgreSQL's {double.postgres * 1000:.0f} ms",
        f"other processes took {single.rest * 1000:.0f} ms of CPU per post next to 1 worker "
        f"({single.rest / single.span:.2f} cores) and {double.rest * 1000:.0f} ms next to 2 "
        f"({double.rest / double.span:.2f} cores)",
        f"polls per worker {' / '.join(f'{w:,.0f}' for w in waiters)}: "
        + ("balanced" if max(waiters) <= 1.1 * min(waiters) else "unbalanced: the busier worker sets the time"),
    ]
    if ratio < TARGET:
        notes.insert(0, f"{TARGET} x missed ({ratio:.2f} x); why, from these figures:")
    return notes


def main(argv: list[str]) -> None:
    parser = mode_parser("workers", __doc__, "10,000 parked polls (default: 2,000)")
    parser.add_argument("--polls", type=int, help="parked polls per set-up")
    parser.add_argument("--posts", type=int, help="timed posts per set-up (default: 5, full: 7)")
    args = parser.parse_args(argv)
    measure(quick=not args.full, polls=args.polls, posts=args.posts).print()


if __name__ == "__main__":
    main(sys.argv[1:])
