"""``python -m mail.demo`` (or ``imbus-demo``): the chat on http://127.0.0.1:8069.

Without ``--db-url`` / ``$DATABASE_URL`` it runs its own PostgreSQL in
``.imbus/pgdata`` under the current folder, durable, so the history survives
a restart. The database, its tables and the demo accounts are created when
missing.

gevent must patch the process before psycopg2 and the pool are imported, so
this module imports the application only inside :func:`main`, after
patching, whether it runs as ``python -m mail.demo`` or as the console
script.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bus.embedded_postgres import EmbeddedPostgres

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
    parser.add_argument("--cors-origins", default="*",
                        help="origins whose pages may poll from another site: * (any, the default, as Odoo), "
                             "a comma-separated list of exact origins (scheme://host[:port]), or '' for none")
    parser.add_argument("--no-websocket", dest="websocket", action="store_false",
                        help="do not serve /websocket (it answers 404): the page long-polls")
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT,
                        help=f"port of the private PostgreSQL when no database is given (default {DEFAULT_PG_PORT})")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes serving the port (default: one per core with gevent, 1 with threaded)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT, so that other processes may serve the same port")
    parser.add_argument("--attachment-dir", default=None,
                        help="keep uploaded files in this folder (default: in PostgreSQL)")
    parser.add_argument("--max-attachment-size", type=int, default=None,
                        help="largest upload in bytes (default 10 MiB)")
    from bus import deadlines
    from bus.workers import worker_count

    deadlines.add_options(parser)
    args = parser.parse_args(argv)
    args.timeouts = deadlines.from_options(parser, args)
    try:
        args.workers = worker_count(args.workers, args.server)
    except ValueError as exc:
        parser.error(str(exc))
    return args


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
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.workers == 1 and args.server == "gevent":
        from bus.gevent_patch import patch_process

        patch_process()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bus.config import database_url_from_env

    db_url = args.db_url if args.db_url is not None else database_url_from_env()
    cluster = None
    if db_url is None:
        cluster = _start_postgres(args.pg_port)
        db_url = cluster.url(DEMO_DATABASE)
    try:
        if args.workers > 1:
            # The workers share this process's PostgreSQL, which outlives them.
            from bus.workers import run_workers, worker_command

            extra = ["--db-url", db_url] if cluster is not None else []
            status = run_workers(worker_command("mail.demo", argv, *extra), args.workers)
        else:
            status = _serve(args, db_url)
    finally:
        if cluster is not None:
            cluster.stop()
    sys.exit(status)


def _start_postgres(port: int) -> EmbeddedPostgres:
    from bus.embedded_postgres import EmbeddedPostgres

    cluster = EmbeddedPostgres(datadir=PGDATA.resolve(), port=port, durable=True)
    _logger.info("starting PostgreSQL in %s (port %d)", cluster.datadir, cluster.port)
    cluster.start()
    try:
        _ensure_database(cluster.url(), DEMO_DATABASE)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _serve(args: argparse.Namespace, db_url: str) -> int:
    from bus.server import serve_gevent, serve_threaded

    from .app import create_app
    from .demo_data import DEMO_USERS, install_demo_data

    settings: dict = {"cors_origins": args.cors_origins, "websocket": args.websocket}
    if args.poll_timeout is not None:
        settings["timeout"] = args.poll_timeout
    if args.attachment_dir:
        settings["attachment_dir"] = Path(args.attachment_dir)
    if args.max_attachment_size is not None:
        settings["max_attachment_size"] = args.max_attachment_size
    app = create_app(db_url, **settings)
    try:
        app.at_start(lambda: install_demo_data(app.database))
        accounts = ", ".join(f"{login}/{password}" for login, password, _ in DEMO_USERS[:2])
        _logger.info("open http://%s:%d and log in as %s", args.host, args.port, accounts)
        if args.server == "gevent":
            serve_gevent(app, args.host, args.port, on_shutdown=app.drain, reuse_port=args.reuse_port,
                         timeouts=args.timeouts)
        else:
            serve_threaded(app, args.host, args.port, on_shutdown=app.drain)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    main()
