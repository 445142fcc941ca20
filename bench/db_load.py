"""Database load: SQL statements the server runs per post (that is, per
wake-up of every parked poll) with few and with many parked pollers, read
from the server's own statement counter (``/bench/stats``). With shared
reads it must not grow with N; Odoo 15 mode runs one query per woken poller.

Usage: python -m bench.db_load [--quick|--full]
"""
from __future__ import annotations

import asyncio
import sys

from bus.database import Database
from bus.models import sendone

from . import client
from .cluster import bench_database
from .fanout import Poster, fanout_round
from .processes import ServerProcess, start_bus
from .report import Section, Table, Target, mode_parser

LABELS = {"default": "bus (default)", "odoo": "bus, Odoo 15 mode"}


async def _count(server: ServerProcess, poster: Poster, pollers: int, posts: int) -> tuple[float, float]:
    """Statements and shared reads per post, while ``pollers`` polls are parked."""
    loop = asyncio.get_running_loop()
    connections = await client.connect_many(server.port, pollers)
    # The dispatcher starts listening with the first poll.
    await connections[0].send(client.poll_request(["load"], 0, peek=True))
    last = await loop.run_in_executor(None, poster.post)
    if server.name.endswith("(default)"):
        await client.wait_position(server.port, last)
    _, last = await fanout_round(server, connections, last, poster.post)  # warm-up: pools open
    before = await client.fetch_json(server.port, "/bench/stats")
    for _ in range(posts):
        _, last = await fanout_round(server, connections, last, poster.post)
    after = await client.fetch_json(server.port, "/bench/stats")
    for connection in connections:
        connection.transport.close()
    return ((after["statements"] - before["statements"]) / posts, (after["reads"] - before["reads"]) / posts)


def writer_statements(url: str, posts: int = 20) -> float:
    """Statements one sendone transaction costs the writer (independent of pollers)."""
    database = Database(url, maxconn=2)
    before = database.statements.value
    for number in range(posts):
        with database.transaction() as tx:
            sendone(tx, "load", "bench", {"n": number})
    spent = (database.statements.value - before) / posts
    database.close()
    return spent


def measure(*, quick: bool = True) -> Section:
    sizes = [10, 1000] if quick else [10, 1000, 10000]
    section = Section("Database load")
    table = Table("Database load: SQL statements per post, counted by the server process "
                  "(each post wakes every parked poll, which then re-polls)",
                  ["server", "parked polls", "posts", "statements / post", "shared reads / post"])
    figures: dict[tuple[str, int], float] = {}
    with bench_database(durable=True) as url:
        writer = writer_statements(url)
        poster = Poster(url)
        for mode in ("default", "odoo"):
            # Odoo mode runs one query per woken poll: at 10,000 that is
            # 10,000 queries a post, and the trend is already plain at 1,000.
            for n in (sizes if mode == "default" else [n for n in sizes if n <= 1000]):
                posts = 10
                with start_bus(url, mode) as server:
                    loop = client.new_loop()
                    try:
                        statements, reads = loop.run_until_complete(_count(server, poster, n, posts))
                    finally:
                        loop.close()
                figures[(mode, n)] = statements
                table.add(LABELS[mode], n, posts, statements, reads)
        poster.database.close()
    table.notes.append(f"the writer's side: {writer:.1f} statements per sendone transaction "
                       "(the INSERT sent with COMMIT and the post-commit NOTIFY; BEGIN/COMMIT not counted)")
    section.tables.append(table)
    few, many = figures[("default", sizes[0])], figures[("default", sizes[-1])]
    section.targets.append(Target(f"statements per post do not grow with N ({sizes[0]} -> {sizes[-1]})",
                                  f"{few:.2f} -> {many:.2f}", "no growth", many <= few))
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("db_load", __doc__, "N = 10, 1,000 and 10,000 (default: 10 and 1,000)")
    args = parser.parse_args(argv)
    measure(quick=not args.full).print()


if __name__ == "__main__":
    main(sys.argv[1:])
