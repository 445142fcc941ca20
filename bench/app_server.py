"""The bus as ``python -m bus serve --server gevent`` runs it, plus one
bench-only route, ``/bench/stats``, that reports the process's own counters
(SQL statements, shared reads, parked polls) so a benchmark can prove the
database load does not grow with the number of pollers.

Modes: ``default`` (Settings defaults), ``no-holdback`` (shared reads, but
every visible row taken as final), ``odoo`` (what ``--odoo-mode`` sets: no
hold-back, one query per woken poller).

Several of these may serve one port, as ``--workers N`` runs the bus
(``--reuse-port``). A request to that port lands on any of them, so each
can also answer ``/bench/stats``, and nothing else, on a port of its own
(``--stats-port``): a benchmark reads every worker's counters there.

Idle keep-alive connections are kept for 10 minutes, not the 5 s of
``python -m bus serve``: between rounds a benchmark's clients wait while it
counts and settles, which on a loaded 2-core machine takes longer than 5 s,
where a real client re-polls at once.

Stopped with SIGTERM: parked polls are answered and the app closes its
connections. Usage: python -m bench.app_server --db-url URL --port P [--mode M] [--poll-timeout S]
[--reuse-port] [--stats-port P]
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Callable, Iterable  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

from bus.app import BusApp, create_app  # noqa: E402
from bus.deadlines import Timeouts  # noqa: E402
from bus.server import serve_gevent  # noqa: E402

#: The deadlines of a benchmark's clients (see the module docstring).
BENCH_TIMEOUTS = Timeouts(idle=600.0)

MODES = {
    "default": {},
    "no-holdback": {"hold_back_gaps": False},
    "no-pacing": {"pace_herds": False},
    "odoo": {"hold_back_gaps": False, "shared_reads": False},
}


def stats(app: BusApp) -> Response:
    """The process's own counters, as JSON."""
    dispatcher = app.dispatcher
    return Response(json.dumps({
        "statements": app.database.statements.value,
        "reads": dispatcher.reads,
        "waiters": dispatcher.waiter_count,
        "position": dispatcher.position,
    }), mimetype="application/json")


def add_stats_route(app: BusApp) -> None:
    """``GET /bench/stats``: the process's own counters. A route of the app
    rather than a wrapper around it, so parked polls keep the stack depth
    they have in production."""

    @app.http_route("/bench/stats")
    def route(request: Request) -> Response:
        return stats(app)


def serve_stats(app: BusApp, port: int) -> None:
    """Answer ``/bench/stats`` on ``port`` too, from a greenlet started
    before the app's server: it runs only once that server has bound the
    shared port and waits in its loop, so a stats port that answers means
    this worker takes its share of the shared port's connections."""

    def stats_only(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if Request(environ).path != "/bench/stats":
            return Response(status=404)(environ, start_response)
        return stats(app)(environ, start_response)

    gevent.spawn(WSGIServer(("127.0.0.1", port), stats_only, log=None).serve_forever)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app_server", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="default")
    parser.add_argument("--poll-timeout", type=float, default=600.0)
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT, next to other workers")
    parser.add_argument("--stats-port", type=int, help="also answer /bench/stats, alone, on this port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(args.db_url, timeout=args.poll_timeout, **MODES[args.mode])
    try:
        add_stats_route(app)
        if args.stats_port is not None:
            serve_stats(app, args.stats_port)
        serve_gevent(app, "127.0.0.1", args.port, on_shutdown=app.drain, reuse_port=args.reuse_port,
                     timeouts=BENCH_TIMEOUTS)
    finally:
        app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
