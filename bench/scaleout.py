"""Scale-out: two server processes sharing one database, each with its own
dispatcher: 10,000 parked polls on each (20,000 in all) must all be
answered without an error, and the time per message (post -> every poll
answered) is set next to one process holding the same number of polls.

The clients run in one process per 10,000 polls: a process may not open
more sockets than its hard RLIMIT_NOFILE (20,000 on some machines). Where
that limit keeps one server from holding 20,000, one and two processes are
compared at the most one can hold (19,000 there).

Usage: python -m bench.scaleout [--per-process N] [--posts K]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections import Counter
from typing import Any

from . import client
from .cluster import bench_database
from .fanout import CHANNEL, Poster, fanout_answer
from .processes import raise_open_files, start_bus
from .report import Section, Table, Target, median

MP = multiprocessing.get_context("fork")
#: Connections per client process.
CLIENT_CONNECTIONS = 10000


def _client_process(port: int, count: int, total: int, pipe: Any) -> None:
    loop = client.new_loop()
    try:
        loop.run_until_complete(_client(port, count, total, pipe))
    finally:
        loop.close()


async def _client(port: int, count: int, total: int, pipe: Any) -> None:
    """Park ``count`` polls on one server per round the bench process asks
    for; report them parked once the server holds ``total`` (this client's
    and the other clients' of the same server)."""
    loop = asyncio.get_running_loop()
    connections = await client.connect_many(port, count)
    await connections[0].send(client.poll_request([CHANNEL], 0, peek=True))  # starts the dispatcher
    pipe.send("connected")
    while True:
        last = await loop.run_in_executor(None, pipe.recv)
        if last is None:
            break
        await client.wait_position(port, last)
        answers = asyncio.gather(*(fanout_answer(c, last) for c in connections), return_exceptions=True)
        await client.wait_parked(port, total)
        pipe.send("parked")
        results = await answers
        failures = [r for r in results if isinstance(r, BaseException)]
        ids = Counter(client.last_id(r[0]) for r in results if not isinstance(r, BaseException))
        pipe.send((max(c.answered_at for c in connections), len(failures), dict(ids)))
    for connection in connections:
        connection.transport.close()


def _receive(pipe: Any, timeout: float) -> Any:
    """The next report of a client process; an error if it died or went quiet."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process said nothing for {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError("a client process died (its error is printed above)") from None


def per_message(url: str, servers: int, per_server: int, posts: int,
                per_client: int = CLIENT_CONNECTIONS) -> tuple[list[float], int]:
    """Seconds from each post until every poll on every server has it, and the errors."""
    processes = [start_bus(url) for _ in range(servers)]
    clients = []
    try:
        for server in processes:
            for start in range(0, per_server, per_client):
                ours, theirs = MP.Pipe()
                count = min(per_client, per_server - start)
                worker = MP.Process(target=_client_process, args=(server.port, count, per_server, theirs))
                worker.start()
                theirs.close()  # so a dead client reads as EOF here, not as silence
                clients.append((worker, ours))
        for _, pipe in clients:
            if _receive(pipe, 300) != "connected":
                raise RuntimeError("a client process did not connect")
        poster = Poster(url)
        last = poster.post()
        times, errors = [], 0
        for _ in range(posts + 1):  # the first round is a warm-up
            for _, pipe in clients:
                pipe.send(last)
            for _, pipe in clients:
                if _receive(pipe, 300) != "parked":
                    raise RuntimeError("a client process failed to park its polls")
            started = time.monotonic()
            last = poster.post()
            reports = [_receive(pipe, 300) for _, pipe in clients]
            times.append(max(done for done, _, _ in reports) - started)
            errors += sum(failed for _, failed, _ in reports)
            errors += sum(n for _, _, ids in reports for got, n in ids.items() if got != last)
        for _, pipe in clients:
            pipe.send(None)
        poster.database.close()
        return times[1:], errors
    finally:
        for worker, _ in clients:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
        for server in processes:
            server.stop()


def measure(*, per_process: int = 10000, posts: int = 5) -> Section:
    section = Section("Scale-out")
    total = 2 * per_process
    # One process holding every poll needs a socket per poll plus its own
    # files; where the open-files limit cannot be raised that far (it takes
    # CAP_SYS_RESOURCE), both sides of the comparison hold what one can.
    limit = raise_open_files()
    if limit < per_process + 1000:
        raise RuntimeError(f"an open-files limit of {limit} is too low for {per_process} polls per process")
    compared = min(total, (limit - 1000) // 1000 * 1000)
    with bench_database(durable=True) as url:
        one, one_errors = per_message(url, 1, compared, posts)
        split, split_errors = per_message(url, 2, compared // 2, posts)
        two, two_errors = (split, split_errors) if compared == total else per_message(url, 2, per_process, posts)
    table = Table(f"Scale-out: time per message (post -> last of all parked polls answered), "
                  f"{posts} posts, median", ["servers", "parked polls", "median ms", "max ms", "errors",
                                             "ratio to 1 process"])
    table.add("1 process", compared, median(one) * 1000, max(one) * 1000, one_errors, 1.0)
    table.add("2 processes, one database", compared, median(split) * 1000, max(split) * 1000, split_errors,
              median(split) / median(one))
    if compared != total:
        table.add("2 processes, one database", total, median(two) * 1000, max(two) * 1000, two_errors, "-")
        table.notes.append(f"one process cannot hold {total:,} sockets under this machine's open-files limit, "
                           f"so one and two processes are compared at {compared:,}")
    table.notes.append("clients, servers and PostgreSQL share the machine's 2 cores; "
                       f"one client process per {CLIENT_CONNECTIONS:,} polls")
    section.tables.append(table)
    errors = one_errors + split_errors + (two_errors if compared != total else 0)
    section.targets.append(Target(f"scale-out to {total} parked polls: no errors", f"{errors} errors", "0",
                                  errors == 0))
    ratio = median(split) / median(one)
    section.targets.append(Target(f"{compared} polls on 2 processes vs on 1: time per message",
                                  f"{ratio:.2f} x", "< 1 x (faster)", ratio < 1))
    return section


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-process", type=int, default=10000)
    parser.add_argument("--posts", type=int, default=5)
    args = parser.parse_args(argv)
    measure(per_process=args.per_process, posts=args.posts).print()


if __name__ == "__main__":
    main(sys.argv[1:])
