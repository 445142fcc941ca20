"""The bus as ``python -m bus serve --server gevent`` runs it, plus one
bench-only route, ``/bench/stats``, that reports the process's own counters
(SQL statements, shared reads, parked polls) so a benchmark can prove the
database load does not grow with the number of pollers.

Modes: ``default`` (Settings defaults), ``no-holdback`` (shared reads, but
every visible row taken as final), ``odoo`` (what ``--odoo-mode`` sets: no
hold-back, one query per woken poller).

Stopped with SIGTERM: parked polls are answered and the app closes its
connections. Usage: python -m bench.app_server --db-url URL --port P [--mode M] [--poll-timeout S]
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from werkzeug.wrappers import Request, Response  # noqa: E402

from bus.app import BusApp, create_app  # noqa: E402
from bus.server import serve_gevent  # noqa: E402

MODES = {
    "default": {},
    "no-holdback": {"hold_back_gaps": False},
    "odoo": {"hold_back_gaps": False, "shared_reads": False},
}


def add_stats_route(app: BusApp) -> None:
    """``GET /bench/stats``: the process's own counters. A route of the app
    rather than a wrapper around it, so parked polls keep the stack depth
    they have in production."""

    @app.http_route("/bench/stats")
    def stats(request: Request) -> Response:
        dispatcher = app.dispatcher
        return Response(json.dumps({
            "statements": app.database.statements.value,
            "reads": dispatcher.reads,
            "waiters": dispatcher.waiter_count,
            "position": dispatcher.position,
        }), mimetype="application/json")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app_server", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="default")
    parser.add_argument("--poll-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(args.db_url, timeout=args.poll_timeout, **MODES[args.mode])
    try:
        add_stats_route(app)
        serve_gevent(app, "127.0.0.1", args.port, on_shutdown=app.drain)
    finally:
        app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
