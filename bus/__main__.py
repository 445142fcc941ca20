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
    serve.add_argument("--cors-origins", default="*",
                       help="origins whose pages may poll from another site: * (any, the default, as Odoo), "
                            "a comma-separated list of exact origins (scheme://host[:port]), or '' for none")
    serve.add_argument("--odoo-mode", action="store_true",
                       help="behave like Odoo 15 (no gap hold-back, one query per woken poller); for comparisons")
    schema_cmd = commands.add_parser("schema", help="create the bus tables and exit")
    schema_cmd.add_argument("--db-url", default=None, help="default: $DATABASE_URL")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db_url = args.db_url if args.db_url is not None else database_url_from_env()
    if db_url is None:
        parser.error("no database: pass --db-url or set DATABASE_URL")
    if args.command == "schema":
        from . import schema
        from .database import Database

        database = Database(db_url)
        schema.install(database)
        database.close()
        return

    from .app import create_app
    from .server import serve_gevent, serve_threaded

    options = {"timeout": args.poll_timeout, "cors_origins": args.cors_origins}
    if args.odoo_mode:
        options.update(hold_back_gaps=False, shared_reads=False)
    app = create_app(db_url, **options)
    serve_fn = serve_gevent if args.server == "gevent" else serve_threaded
    try:
        # On SIGTERM the parked polls answer at once, before the server waits
        # for the answers in flight; the pool is closed only after that.
        serve_fn(app, args.host, args.port, on_shutdown=app.dispatcher.stop)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


if __name__ == "__main__":
    main()
