"""``python -m mail.demo`` (or ``imbus-demo``): the chat on http://127.0.0.1:8069.

Without ``--db-url`` / ``$DATABASE_URL`` it runs its own PostgreSQL in
``.imbus/pgdata`` under the current folder, durable, so the history survives
a restart. The database, its tables and the demo accounts are created when
missing.

gevent must patch the process before psycopg2 and the pool are imported, so
this module imports the application only inside :func:`main`, after
patching.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "threaded" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT_PORT = 8069
DEFAULT_PG_PORT = 54329
DEMO_DATABASE = "imbus_demo"
PGDATA = Path(".imbus") / "pgdata"

_logger = logging.getLogger("mail.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mail.demo", description="Run the imbus chat demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--db-url", default=None,
                        help="PostgreSQL URL (default: $DATABASE_URL, else a private server in ./.imbus/pgdata)")
    parser.add_argument("--poll-timeout", type=float, default=None, help="seconds a poll waits (default 50)")
    parser.add_argument("--server", choices=["gevent", "threaded"], default="gevent")
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT,
                        help=f"port of the private PostgreSQL when no database is given (default {DEFAULT_PG_PORT})")
    return parser.parse_args(argv)


def _ensure_database(server_url: str, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cr.fetchone() is None:
                cr.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.server == "gevent":
        # Already done when run as ``python -m mail.demo``; the console script
        # imports this module normally and gets here first.
        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            monkey.patch_all()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from bus.config import database_url_from_env
    from bus.embedded_postgres import EmbeddedPostgres
    from bus.server import serve_gevent, serve_threaded

    from .app import create_app
    from .demo_data import DEMO_USERS, install_demo_data

    db_url = args.db_url if args.db_url is not None else database_url_from_env()
    cluster = None
    if db_url is None:
        cluster = EmbeddedPostgres(datadir=PGDATA.resolve(), port=args.pg_port, durable=True)
        _logger.info("starting PostgreSQL in %s (port %d)", cluster.datadir, cluster.port)
        cluster.start()
        _ensure_database(cluster.url(), DEMO_DATABASE)
        db_url = cluster.url(DEMO_DATABASE)
    app = None
    try:
        settings = {} if args.poll_timeout is None else {"timeout": args.poll_timeout}
        app = create_app(db_url, **settings)
        app.at_start(lambda: install_demo_data(app.database))
        accounts = ", ".join(f"{login}/{password}" for login, password, _ in DEMO_USERS[:2])
        _logger.info("open http://%s:%d and log in as %s", args.host, args.port, accounts)
        serve = serve_gevent if args.server == "gevent" else serve_threaded
        serve(app, args.host, args.port, on_shutdown=app.dispatcher.stop)
    except KeyboardInterrupt:
        _logger.info("stopping")
    finally:
        if app is not None:
            app.close()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
