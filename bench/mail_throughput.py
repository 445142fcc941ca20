"""Write throughput through the chat application: concurrent HTTP clients
logged in as the demo admin post to #general with ``/mail/message/post``
(one keep-alive connection each) while logged-in long-polls stay parked and
re-poll; set against the raw SQL ceiling of bench/write_throughput.py in the
same run, with a py-spy profile of the server during the posts.

Usage: python -m bench.mail_throughput [--quick|--full] [--no-fsync]
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Optional

import psycopg2.extensions

from bus.channels import channel_with_db

from . import client
from .cluster import bench_database, max_bus_id
from .processes import ServerProcess, free_port
from .profiling import sampled
from .report import Section, Table, Target, mode_parser
from .write_throughput import WRITERS, _raw_writer, run_writers

POSTERS = WRITERS
PARK_SECONDS = 2.0


def start_mail(url: str) -> ServerProcess:
    """The demo chat server (gevent), on the bench database."""
    port = free_port()
    argv = [sys.executable, "-m", "mail.demo", "--db-url", url, "--port", str(port), "--poll-timeout", "600"]
    return ServerProcess(argv, port, "mail demo")


async def _json(connection: client.HttpConnection, request: bytes) -> Any:
    answer = json.loads(await connection.send(request))
    if "error" in answer:
        raise RuntimeError(f"JSON-RPC error: {answer['error']}")
    return answer["result"]


async def _run(port: int, url: str, pollers: int, duration: float, catch_up: float = 120.0) -> dict:
    """Post for ``duration`` seconds, then give the polls ``catch_up`` seconds
    to receive everything."""
    loop = asyncio.get_running_loop()
    dbname = psycopg2.extensions.parse_dsn(url)["dbname"]
    login = (await client.connect_many(port, 1))[0]
    await _json(login, client.rpc_request("/web/session/authenticate",
                                          {"login": "admin", "password": "admin", "db": dbname}))
    cookie = client.set_cookie(login.head, b"session_id")
    info = await _json(login, client.rpc_request("/mail/init_messaging", {}, cookie))
    channel_id = next(c["id"] for c in info["channels"] if c["name"] == "general")
    login.transport.close()

    first = await loop.run_in_executor(None, max_bus_id, url)
    listeners = await client.connect_many(port, pollers)
    posters = await client.connect_many(port, POSTERS)
    positions = [first] * pollers
    reached = [0.0] * pollers
    target: Optional[int] = None
    errors: list[str] = []

    async def follow(i: int, connection: client.HttpConnection) -> None:
        while target is None or positions[i] < target:
            body = await connection.send(client.rpc_request(
                "/longpolling/poll", {"channels": [], "last": positions[i], "options": {}}, cookie))
            try:
                newest = client.newest_id(body)  # chat payloads hold '{"id":' too
            except RuntimeError as error:
                errors.append(str(error)[:200])
                return
            if newest is not None:
                positions[i] = max(positions[i], newest)
                reached[i] = connection.answered_at

    def settle(i: int, task: asyncio.Task) -> None:
        if positions[i] >= (target or 0) and not task.done():
            task.cancel()

    post = client.rpc_request("/mail/message/post", {
        "thread_model": "mail.channel", "thread_id": channel_id,
        "post_data": {"body": "benchmark message", "message_type": "comment", "subtype_xmlid": "mail.mt_comment"},
    }, cookie)
    posted = [0] * POSTERS

    async def write(i: int, connection: client.HttpConnection, stop: float) -> None:
        while time.monotonic() < stop:
            body = await connection.send(post)
            if connection.status != 200 or b'"error"' in body:
                errors.append(body.decode()[:200])
                return
            posted[i] += 1

    followers = [asyncio.ensure_future(follow(i, c)) for i, c in enumerate(listeners)]
    # The chat server has no counter of parked polls: give them time to park.
    await asyncio.sleep(PARK_SECONDS)
    cpu = client.client_cpu()
    started = time.monotonic()
    await asyncio.gather(*(write(i, c, started + duration) for i, c in enumerate(posters)))
    written = time.monotonic() - started
    # The newest row the polls hear: a post also writes to the channel's
    # uuid, which members do not listen to (they hear the channel itself).
    heard = channel_with_db(dbname, ("mail.channel", channel_id))
    target = await loop.run_in_executor(None, max_bus_id, url, heard)
    for i, task in enumerate(followers):
        settle(i, task)
    _, pending = await asyncio.wait(followers, timeout=catch_up)
    for task in pending:
        task.cancel()
    for connection in listeners + posters:
        connection.transport.close()
    return {"posted": sum(posted), "written": written, "delivered": max(reached) - started if pollers else written,
            "stalled": len(pending), "errors": errors, "client_cpu": client.client_cpu() - cpu}


def measure(*, quick: bool = True, durable: bool = True) -> Section:
    duration = 3.0 if quick else 10.0
    pollers = 1000
    section = Section("Write throughput over HTTP (/mail/message/post)")
    with bench_database(durable=durable) as url:
        raw, _ = run_writers(url, _raw_writer, duration)
        with start_mail(url) as server:
            loop = client.new_loop()
            try:
                cpu = server.cpu_seconds()
                with sampled(server.pid, seconds=duration + 60) as samples:
                    outcome = loop.run_until_complete(_run(server.port, url, pollers, duration,
                                                           catch_up=20.0 if quick else 120.0))
                server_cpu = server.cpu_seconds() - cpu
            finally:
                loop.close()
    posts = outcome["posted"]
    table = Table(f"Posting through the chat app: {POSTERS} HTTP clients (admin, #general), "
                  f"{pollers} logged-in parked polls, {duration:.0f} s, fsync {'on' if durable else 'off'}",
                  ["config", "msgs/s", "ratio to raw", "notes"])
    table.add("raw SQL ceiling, 8 writer processes (same run)", raw.rate, 1.0, f"{raw.committed} commits")
    table.add("HTTP /mail/message/post, answered", posts / outcome["written"], posts / outcome["written"] / raw.rate,
              f"{posts} posts; server CPU {server_cpu:.1f} s; client CPU {outcome['client_cpu']:.1f} s")
    delivered = posts / outcome["delivered"] if outcome["delivered"] else 0.0
    table.add(f"  ... delivered to all {pollers} polls", delivered, delivered / raw.rate,
              f"{outcome['stalled']} polls stalled; {len(outcome['errors'])} errors"
              + (f", e.g. {outcome['errors'][0]}" if outcome["errors"] else ""))
    table.notes.append("one gevent server process does all the work of a post (session check, "
                       "sanitising, message rows, bus rows) on one core, next to PostgreSQL and the client")
    if posts:
        table.notes.append(f"each post wakes {pollers} polls, each answered and re-polled through the chat's "
                           f"subscriptions (session, channels and presence from the database, Odoo's model): "
                           f"{server_cpu / posts * 1e3:,.1f} ms of server CPU per post, "
                           f"{server_cpu / posts / pollers * 1e6:,.1f} us per woken poll")
    table.notes.append("#4 sets its 60 % target on the sendmany path (bench.write_throughput); here it asks "
                       "for the figure and its profile, which follows")
    section.tables.append(table)
    stalled, errors = outcome["stalled"], len(outcome["errors"])
    section.targets.append(Target(f"HTTP posts reach all {pollers} polls", f"{stalled} stalled, {errors} errors",
                                  "0 stalled, 0 errors", posts > 0 and not stalled and not errors, samples.text))
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("mail_throughput", __doc__, "10 s instead of 3 s")
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args(argv)
    measure(quick=not args.full, durable=not args.no_fsync).print()


if __name__ == "__main__":
    main(sys.argv[1:])
