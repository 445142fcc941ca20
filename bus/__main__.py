"""``python -m bus serve`` runs the bus alone; ``python -m bus schema`` creates its tables.

The gevent server needs the process monkey-patched before anything else is
imported, so the server kind is read from argv first.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "serve" in sys.argv and "threaded" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402

from .config import DEFAULT_TIMEOUT, database_url_from_env  # noqa: E402
from .deadlines import Timeouts  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line; deployment files are checked against it by the tests."""
    parser = argparse.ArgumentParser(prog="python -m bus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve /longpolling/* over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8072)
    serve.add_argument("--db-url", default=None, help="default: $DATABASE_URL")
    serve.add_argument("--poll-timeout", type=float, default=DEFAULT_TIMEOUT)
    serve.add_argument("--server", choices=["gevent", "threaded"], default="gevent")
    serve.add_argument("--odoo-mode", action="store_true",
                       help="behave like Odoo 15 (no gap hold-back, one query per woken poller); for comparisons")
    _add_deadline_options(serve)
    schema_cmd = commands.add_parser("schema", help="create the bus tables and exit")
    schema_cmd.add_argument("--db-url", default=None, help="default: $DATABASE_URL")
    return parser


def _add_deadline_options(parser: argparse.ArgumentParser) -> None:
    """The deadlines of a client (bus.deadlines), as options of a command."""
    defaults = Timeouts()
    group = parser.add_argument_group("client deadlines, in seconds (gevent server only)")
    group.add_argument("--idle-timeout", type=float, default=defaults.idle,
                       help=f"for the next request on a kept-alive connection (default {defaults.idle:g})")
    group.add_argument("--head-timeout", type=float, default=defaults.head,
                       help=f"for a request's whole head (default {defaults.head:g})")
    group.add_argument("--body-timeout", type=float, default=defaults.body,
                       help=f"for a request's whole body (default {defaults.body:g})")


def _timeouts(args: argparse.Namespace) -> Timeouts:
    """The deadlines the command line gives; ValueError for one that is not positive."""
    return Timeouts(idle=args.idle_timeout, head=args.head_timeout, body=args.body_timeout)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db_url = args.db_url if args.db_url is not None else database_url_from_env()
    if db_url is None:
        parser.error("no database: pass --db-url or set DATABASE_URL")
    try:
        timeouts = _timeouts(args) if args.command == "serve" else Timeouts()
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "schema":
        from . import schema
        from .database import Database

        database = Database(db_url)
        schema.install(database)
        database.close()
        return

    from .app import create_app
    from .server import serve_gevent, serve_threaded

    options = {"timeout": args.poll_timeout}
    if args.odoo_mode:
        options.update(hold_back_gaps=False, shared_reads=False)
    app = create_app(db_url, **options)
    try:
        # On SIGTERM the parked polls answer at once, before the server waits
        # for the answers in flight; the pool is closed only after that.
        if args.server == "gevent":
            serve_gevent(app, args.host, args.port, on_shutdown=app.dispatcher.stop, timeouts=timeouts)
        else:
            serve_threaded(app, args.host, args.port, on_shutdown=app.dispatcher.stop)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


if __name__ == "__main__":
    main()
