"""``python -m bus serve`` (or ``imbus-bus serve``) runs the bus alone;
``python -m bus schema`` creates its tables.

The gevent server needs the process monkey-patched before psycopg2,
threading and the pool are loaded. This module and the ``bus`` package
import none of them, so :func:`main` patches first, whether it runs as
``python -m bus`` or from the console script, and imports the application
only then.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 8072


def build_parser() -> argparse.ArgumentParser:
    """The command line; deployment files are checked against it by the tests."""
    from . import deadlines
    from .config import DEFAULT_TIMEOUT

    parser = argparse.ArgumentParser(prog="python -m bus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve /longpolling/* and /websocket over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--db-url", default=None, help="default: $DATABASE_URL")
    serve.add_argument("--poll-timeout", type=float, default=DEFAULT_TIMEOUT)
    serve.add_argument("--server", choices=["gevent", "threaded"], default="gevent")
    serve.add_argument("--workers", type=int, default=None,
                       help="processes serving the port, each with its own dispatcher (default: one per core"
                            " with gevent, 1 with threaded)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="bind with SO_REUSEPORT, so that other processes may serve the same port")
    serve.add_argument("--cors-origins", default="*",
                       help="origins whose pages may poll from another site: * (any, the default, as Odoo), "
                            "a comma-separated list of exact origins (scheme://host[:port]), or '' for none")
    serve.add_argument("--no-websocket", dest="websocket", action="store_false",
                       help="do not serve /websocket (it answers 404): clients long-poll")
    serve.add_argument("--no-herd-pacing", dest="pace_herds", action="store_false",
                       help="read new rows at once even while the polls the last read woke come back")
    serve.add_argument("--odoo-mode", action="store_true",
                       help="behave like Odoo 15 (no gap hold-back, one query per woken poller); for comparisons")
    deadlines.add_options(serve)
    schema_cmd = commands.add_parser("schema", help="create the bus tables and exit")
    schema_cmd.add_argument("--db-url", default=None, help="default: $DATABASE_URL")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .deadlines import from_options

        args.timeouts = from_options(parser, args)
        from .workers import run_workers, worker_command, worker_count

        try:
            workers = worker_count(args.workers, args.server)
        except ValueError as exc:
            parser.error(str(exc))
        if workers > 1:
            _configure_logging()
            sys.exit(run_workers(worker_command("bus", argv), workers))
        if args.server == "gevent":
            from .gevent_patch import patch_process

            patch_process()
    _configure_logging()
    from .config import database_url_from_env

    db_url = args.db_url if args.db_url is not None else database_url_from_env()
    if db_url is None:
        parser.error("no database: pass --db-url or set DATABASE_URL")
    if args.command == "schema":
        _install_schema(db_url)
    else:
        _serve(args, db_url)


def _configure_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _install_schema(db_url: str) -> None:
    from . import schema
    from .database import Database

    database = Database(db_url)
    try:
        schema.install(database)
    finally:
        database.close()


def _serve(args: argparse.Namespace, db_url: str) -> None:
    from .app import create_app
    from .server import serve_gevent, serve_threaded

    options = {"timeout": args.poll_timeout, "cors_origins": args.cors_origins, "websocket": args.websocket,
               "pace_herds": args.pace_herds}
    if args.odoo_mode:
        options.update(hold_back_gaps=False, shared_reads=False)
    app = create_app(db_url, **options)
    try:
        # On SIGTERM the parked polls answer at once and new requests are
        # refused, then the server waits for the answers in flight; the pool
        # is closed only after that.
        if args.server == "gevent":
            serve_gevent(app, args.host, args.port, on_shutdown=app.drain, reuse_port=args.reuse_port,
                         timeouts=args.timeouts)
        else:
            serve_threaded(app, args.host, args.port, on_shutdown=app.drain)
    finally:
        app.close()


if __name__ == "__main__":
    main()
