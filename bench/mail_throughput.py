"""The chat at bus speed: delivered throughput of chat posts to 1,000
logged-in users' polls next to the bus alone with the same 1,000 pollers,
and the server's SQL statements per chat post with 100 and 1,000 parked
polls, all in one run on one private cluster.

* bus only: bench/write_throughput.py's delivery run (8 writer processes
  committing ``bus.sendone``, 1,000 polls parked on the written channel of
  a gevent bus server), messages/s counted when every poll has them;
* chat: 1,000 users, all members of #general, each polling with a cookie of
  its own (signed by the benchmark with the server's secret: logging a
  thousand users in would measure password hashing), while 8 other members
  post to #general through ``/mail/message/post`` on the same gevent server (bench/mail_server.py), posts/s counted when every poll has
  them. The server does all of a post's work (session, membership,
  sanitising, message rows, bus rows) next to waking the polls; then the
  same with herd pacing off (bus/herd.py), to show what it buys;
* statements per post: posts one at a time, each once every poll has the
  previous one, read from the server's own statement counter
  (``/bench/stats``); each poll's presence is written first, so that the
  rounds fall within its 5 s of freshness.

A py-spy profile of the chat server while it posts is printed when the
throughput target is missed.

Usage: python -m bench.mail_throughput [--quick|--full] [--no-fsync]
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Optional

import psycopg2.extensions

from bus.channels import channel_with_db
from bus.database import Database
from mail import channels, presence
from mail import schema as mail_schema
from mail.demo_data import install_demo_data
from mail.sessions import COOKIE_NAME, SECRET_ENV, Session, SessionCodec

from . import client
from .cluster import bench_database, max_bus_id
from .processes import ServerProcess, free_port
from .profiling import sampled
from .report import Section, Table, Target, mode_parser
from .write_throughput import WRITERS, run_delivery

POSTERS = WRITERS
USERS = 1000
FEW_USERS = 100
#: Posts counted: few enough that the rounds end well within the presence
#: interval (5 s) of the presence refreshes made just before them at 1,000
#: polls, so that none of those is written again inside the count.
ROUNDS = 5
SECRET = "imbus-bench-secret"


@dataclass
class Chat:
    """The seeded chat: the polling users' cookies, the posting users', and #general."""

    cookies: list[bytes]
    posters: list[bytes]
    general: int
    heard: str  # #general's channel key: what the polls hear of each post


def _cookie(codec: SessionCodec, uid: int, version: int) -> bytes:
    return f"{COOKIE_NAME}={codec.token(Session(uid, version))}".encode()


def seed(url: str, users: int) -> Chat:
    """The demo data plus ``users`` polling and ``POSTERS`` posting users in
    #general (one shared password hash that matches nothing: nobody logs in,
    the cookies are signed here). Posters are users of their own: a post
    updates its author's membership row, so posts of one author queue on
    its lock and would measure that."""
    database = Database(url, maxconn=2)
    try:
        mail_schema.install(database)
        install_demo_data(database)
        with database.transaction() as tx:
            general = tx.execute("SELECT id FROM mail_channel WHERE name = 'general'").fetchone()[0]
            partner_ids = [row[0] for row in tx.execute(
                "INSERT INTO res_partner (name) SELECT 'Bench user ' || n FROM generate_series(1, %s) n"
                " RETURNING id", (users + POSTERS,)).fetchall()]
            accounts = tx.execute(
                "INSERT INTO res_users (login, password, partner_id) SELECT 'bench' || p, '!', p"
                " FROM unnest(%s::integer[]) p RETURNING id, session_version", (partner_ids,)).fetchall()
            channels.add_member_ids(tx, general, partner_ids)
    finally:
        database.close()
    codec = SessionCodec(SECRET)
    dbname = psycopg2.extensions.parse_dsn(url)["dbname"]
    cookies = [_cookie(codec, uid, version) for uid, version in sorted(accounts)]
    return Chat(cookies[:users], cookies[users:], general, channel_with_db(dbname, ("mail.channel", general)))


def start_chat(url: str, *, pace_herds: bool = True) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.mail_server", "--db-url", url, "--port", str(port), "--poll-timeout", "600",
            *([] if pace_herds else ["--no-herd-pacing"])]
    return ServerProcess(argv, port, "chat (bench.mail_server)", env={SECRET_ENV: SECRET})


class Pollers:
    """Logged-in clients that re-poll at once after each answer, each from
    the newest id it has seen, until stopped."""

    def __init__(self, connections: list[client.HttpConnection], cookies: list[bytes], first: int) -> None:
        self.connections = connections
        self.cookies = cookies
        self.positions = [first] * len(connections)
        self.answered = [0.0] * len(connections)
        #: When each poll first had ``target``, once a target is set.
        self.reached: list[Optional[float]] = [None] * len(connections)
        self.target: Optional[int] = None
        self.errors: list[str] = []
        self.tasks = [asyncio.ensure_future(self._follow(i)) for i in range(len(connections))]

    async def _follow(self, i: int) -> None:
        connection, cookie = self.connections[i], self.cookies[i]
        while True:
            body = await connection.send(client.rpc_request(
                "/longpolling/poll", {"channels": [], "last": self.positions[i], "options": {}}, cookie))
            try:
                newest = client.newest_id(body)  # chat payloads hold '{"id":' too
            except RuntimeError as error:
                self.errors.append(str(error)[:200])
                return
            if newest is not None and newest > self.positions[i]:
                self.positions[i] = newest
                self.answered[i] = connection.answered_at
                if self.target is not None and newest >= self.target and self.reached[i] is None:
                    self.reached[i] = connection.answered_at

    def aim(self, target: int) -> None:
        self.target = target
        self.reached = [self.answered[i] if position >= target else None
                        for i, position in enumerate(self.positions)]

    async def wait_reached(self, timeout: float) -> bool:
        """Whether every poll had the target within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while any(reached is None for reached in self.reached):
            if time.monotonic() > deadline or self.errors:
                return False
            await asyncio.sleep(0.002)
        return True

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in self.connections:
            connection.transport.close()


async def _json(connection: client.HttpConnection, request: bytes) -> None:
    body = await connection.send(request)
    if connection.status != 200 or b'"error"' in body:
        raise RuntimeError(f"the post failed: {body[:200]!r}")


def _post_request(chat: Chat, poster: int) -> bytes:
    return client.rpc_request("/mail/message/post", {
        "thread_model": "mail.channel", "thread_id": chat.general,
        "post_data": {"body": "benchmark message", "message_type": "comment", "subtype_xmlid": "mail.mt_comment"},
    }, chat.posters[poster])


async def _round(pollers: Pollers, poster: client.HttpConnection, request: bytes, url: str, chat: Chat) -> None:
    """One post, once every poll has it."""
    loop = asyncio.get_running_loop()
    await _json(poster, request)
    pollers.aim(await loop.run_in_executor(None, max_bus_id, url, chat.heard))
    if not await pollers.wait_reached(60):
        raise RuntimeError(f"a post did not reach every poll: {pollers.errors[:1]}")


async def _park(port: int, url: str, chat: Chat, users: int) -> Pollers:
    """``users`` polls parked, once the pushes of their first polls (each
    user coming online tells #general) have reached them all."""
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(None, max_bus_id, url)
    pollers = Pollers(await client.connect_many(port, users), chat.cookies[:users], first)
    await client.wait_parked(port, users)
    while True:
        pollers.aim(await loop.run_in_executor(None, max_bus_id, url, chat.heard))
        if not await pollers.wait_reached(120):
            raise RuntimeError(f"the polls did not settle: {pollers.errors[:1]}")
        await asyncio.sleep(0.5)
        if await loop.run_in_executor(None, max_bus_id, url, chat.heard) == pollers.target:
            return pollers


async def _statements(port: int, url: str, chat: Chat, pollers: Pollers,
                      poster: client.HttpConnection) -> tuple[float, float, float]:
    """Statements and shared reads per post, and the seconds the rounds took."""
    users = len(pollers.connections)
    request = _post_request(chat, 0)
    # Let every presence go stale, then have every poll refresh it (a round)
    # and the refreshes be flushed, so that no poll writes it again during
    # the rounds that are counted.
    await asyncio.sleep(presence.UPDATE_INTERVAL.total_seconds())
    await _round(pollers, poster, request, url, chat)
    await client.wait_parked(port, users)
    await asyncio.sleep(presence.FLUSH_INTERVAL * 1.5)
    before = await client.fetch_json(port, "/bench/stats")
    started = time.monotonic()
    for _ in range(ROUNDS):
        await _round(pollers, poster, request, url, chat)
    await client.wait_parked(port, users)
    seconds = time.monotonic() - started
    after = await client.fetch_json(port, "/bench/stats")
    return ((after["statements"] - before["statements"]) / ROUNDS, (after["reads"] - before["reads"]) / ROUNDS,
            seconds)


async def _throughput(port: int, url: str, chat: Chat, pollers: Pollers, posters: list[client.HttpConnection],
                      duration: float, catch_up: float) -> dict:
    """Post for ``duration`` seconds from every poster; posts/s answered and delivered."""
    loop = asyncio.get_running_loop()
    posted = [0] * len(posters)

    async def write(i: int, stop: float) -> None:
        request = _post_request(chat, i)
        while time.monotonic() < stop:
            await _json(posters[i], request)
            posted[i] += 1

    cpu = client.client_cpu()
    started = time.monotonic()
    await asyncio.gather(*(write(i, started + duration) for i in range(len(posters))))
    written = time.monotonic() - started
    pollers.aim(await loop.run_in_executor(None, max_bus_id, url, chat.heard))
    complete = await pollers.wait_reached(catch_up)
    reached = [r for r in pollers.reached if r is not None]
    return {"posted": sum(posted), "written": written,
            "delivered": (max(reached, default=started + written) - started) if complete else None,
            "stalled": pollers.reached.count(None), "errors": pollers.errors, "client_cpu": client.client_cpu() - cpu}


def _chat_run(url: str, chat: Chat, users: int, *, count: bool, duration: Optional[float] = None,
              catch_up: float = 30.0, pace_herds: bool = True) -> dict:
    """A chat server with ``users`` parked polls: statements per post if
    ``count``, then, with a ``duration``, the throughput (sampled by py-spy)."""
    with start_chat(url, pace_herds=pace_herds) as server:
        loop = client.new_loop()
        try:
            async def run() -> dict:
                pollers = await _park(server.port, url, chat, users)
                posters: list[client.HttpConnection] = []
                try:
                    outcome: dict = {}
                    if count:
                        posters = await client.connect_many(server.port, 1)
                        statements, reads, seconds = await _statements(server.port, url, chat, pollers, posters[0])
                        outcome.update(statements=statements, reads=reads, rounds_seconds=seconds)
                    if duration is not None:
                        # Connected now, all at once, rather than one of them
                        # reused from the count, idle since.
                        for connection in posters:
                            connection.transport.close()
                        posters = await client.connect_many(server.port, POSTERS)
                        cpu = server.cpu_seconds()
                        with sampled(server.pid, seconds=duration + 60) as samples:
                            outcome.update(await _throughput(server.port, url, chat, pollers, posters, duration,
                                                             catch_up))
                        outcome["server_cpu"] = server.cpu_seconds() - cpu
                        outcome["samples"] = samples
                    return outcome
                finally:
                    pollers.close()
                    for connection in posters:
                        connection.transport.close()

            return loop.run_until_complete(run())
        finally:
            loop.close()


def _delivered_rate(run: dict) -> float:
    """Posts a second, counted until every poll had them (0 if some never did)."""
    return run["posted"] / run["delivered"] if run["delivered"] else 0.0


def measure(*, quick: bool = True, durable: bool = True) -> Section:
    duration = 3.0 if quick else 10.0
    catch_up = 30.0 if quick else 120.0
    section = Section("The chat at bus speed")
    with bench_database(durable=durable) as url:
        chat = seed(url, USERS)
        bus = run_delivery(url, "default", USERS, duration)
        alone = _chat_run(url, chat, 0, count=False, duration=duration)
        many = _chat_run(url, chat, USERS, count=True, duration=duration, catch_up=catch_up)
        few = _chat_run(url, chat, FEW_USERS, count=True)
        unpaced = _chat_run(url, chat, USERS, count=False, duration=duration, catch_up=catch_up, pace_herds=False)
    posts = many["posted"]
    delivered = _delivered_rate(many)
    ratio = delivered / bus.rate if bus.rate else 0.0
    table = Table(f"Delivered throughput to {USERS:,} pollers: chat next to the bus alone (same run), "
                  f"{duration:.0f} s each, fsync {'on' if durable else 'off'}",
                  ["config", "msgs/s", "ratio to bus", "notes"])
    table.add(f"bus only: {WRITERS} sendone writer processes, {USERS:,} polls on the channel", bus.rate, 1.0,
              f"{bus.messages} messages; lost {bus.lost}; server CPU {bus.server_cpu:.1f} s; "
              f"problems: {bus.problems}")
    table.add(f"chat, no poll parked: {POSTERS} users posting to #general over HTTP (the post path alone)",
              alone["posted"] / alone["written"], alone["posted"] / alone["written"] / bus.rate if bus.rate else 0.0,
              f"{alone['posted']} posts; server CPU {alone['server_cpu'] / max(alone['posted'], 1) * 1e3:.2f} ms "
              "per post")
    table.add(f"chat: the same, {USERS:,} logged-in polls parked, answered", posts / many["written"],
              posts / many["written"] / bus.rate if bus.rate else 0.0,
              f"{posts} posts; server CPU {many['server_cpu']:.1f} s; client CPU {many['client_cpu']:.1f} s")
    table.add(f"  ... delivered to all {USERS:,} logged-in users' polls", delivered, ratio,
              f"{many['stalled']} polls stalled; {len(many['errors'])} errors"
              + (f", e.g. {many['errors'][0]}" if many["errors"] else ""))
    unpaced_rate = _delivered_rate(unpaced)
    table.add("  ... the same with herd pacing off (--no-herd-pacing), delivered", unpaced_rate,
              unpaced_rate / bus.rate if bus.rate else 0.0,
              f"{unpaced['posted']} posts; server CPU {unpaced['server_cpu']:.1f} s; {unpaced['stalled']} polls "
              f"stalled; {len(unpaced['errors'])} errors")
    if unpaced_rate:
        table.notes.append(f"herd pacing delivers {delivered / unpaced_rate:.1f} x the posts it delivers off, "
                           "in the same run")
    if posts:
        table.notes.append(f"chat: {many['server_cpu'] / posts * 1e3:,.2f} ms of server CPU per post, "
                           "its own work and the waking of every poll included, on one core next to "
                           "PostgreSQL and the clients")
    if alone["posted"] and bus.rate:
        alone_rate = alone["posted"] / alone["written"]
        table.notes.append(f"with no poll to wake, one server process posts at {alone_rate / bus.rate:.0%} of the "
                           "bus-only rate: the posts are made by the process that wakes the polls, the bus's "
                           "writers are processes of their own. That is the ceiling of the chat's ratio on this "
                           "machine, whatever the polls cost")
        table.notes.append(f"delivered to {USERS:,} logged-in polls: {delivered / alone_rate:.0%} of the post path "
                           "alone (what the herd of woken polls leaves of it; reads wait while a herd comes back, "
                           "bus/herd.py)")
    table.notes.append("each chat poll has a channel set of its own (its partner's channel), so the "
                       f"{USERS:,} polls form {USERS:,} audiences; the bus-only polls form one")
    section.tables.append(table)

    load = Table("SQL statements per chat post, counted by the server (posts one at a time, each once "
                 "every parked poll has the previous one)",
                 ["logged-in parked polls", "posts", "statements / post", "shared reads / post", "rounds s"])
    for users, run in ((FEW_USERS, few), (USERS, many)):
        load.add(users, ROUNDS, run["statements"], run["reads"], run["rounds_seconds"])
    load.notes.append("a post's own statements (session, membership, subtype, message, interest, format, "
                      "bus rows) plus the shared read; a woken poll's subscriptions come from memory. "
                      f"Presence is refreshed once per user every {presence.UPDATE_INTERVAL.seconds} s, "
                      "not per post, and written for all of them in one statement a second: every poll "
                      "refreshes it just before the rounds")
    section.tables.append(load)

    stalled, errors = many["stalled"], len(many["errors"])
    target = Target(f"chat delivered to {USERS:,} logged-in polls vs bus only", f"{ratio:.0%}", ">= 50 %",
                    ratio >= 0.5 and not stalled and not errors)
    if not target.met:
        target.profile = many["samples"].text
    section.targets.append(target)
    section.targets.append(Target(f"statements per chat post do not grow with parked polls "
                                  f"({FEW_USERS} -> {USERS:,})",
                                  f"{few['statements']:.2f} -> {many['statements']:.2f}", "no growth",
                                  many["statements"] <= few["statements"] + 0.5))
    return section


def main(argv: list[str]) -> None:
    parser = mode_parser("mail_throughput", __doc__, "10 s per throughput run instead of 3 s")
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args(argv)
    measure(quick=not args.full, durable=not args.no_fsync).print()


if __name__ == "__main__":
    main(sys.argv[1:])
