"""The chat as ``python -m mail.demo`` serves it (gevent), plus the bench-only
``/bench/stats`` route of bench/app_server.py, so a benchmark can count the
server's SQL statements and its parked polls.

Idle keep-alive connections are kept as bench/app_server.py keeps them.
The signing secret comes from ``$IMBUS_SECRET_KEY``, so that the benchmark
can sign the cookies of a thousand users instead of logging each in.

Stopped with SIGINT. Usage: python -m bench.mail_server --db-url URL --port P [--poll-timeout S] [--no-herd-pacing]
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from bench.app_server import BENCH_TIMEOUTS, add_stats_route  # noqa: E402
from bus.server import serve_gevent  # noqa: E402
from mail.app import create_app  # noqa: E402
from mail.demo_data import install_demo_data  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mail_server", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-timeout", type=float, default=600.0)
    parser.add_argument("--no-herd-pacing", dest="pace_herds", action="store_false")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(args.db_url, timeout=args.poll_timeout, pace_herds=args.pace_herds)
    try:
        install_demo_data(app.database)
        add_stats_route(app)
        serve_gevent(app, "127.0.0.1", args.port, timeouts=BENCH_TIMEOUTS)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
