"""The physical limit of this stack: gevent's pywsgi with nothing else.

``POST /longpolling/poll`` parks on one ``gevent.event.Event`` and answers a
fixed JSON-RPC body the size of a one-message bus answer; ``GET /fire`` sets
the event (and arms a new one for the next round); ``GET /bench/stats``
reports how many requests are parked. The listener has TCP_NODELAY, and
requests are parsed by bus.handler.Handler, as in bus/server.py, so
both pay the same per-request and per-answer costs of the stack.

Usage: python -m bench.bare_server --port P
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Callable, Iterable  # noqa: E402

from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from bus.handler import Handler  # noqa: E402

ANSWER = (b'{"jsonrpc":"2.0","id":1,"result":[{"id":1,"message":'
          b'{"type":"bench","payload":{"t":0.0,"n":0}}}]}')


class ParkingApp:
    def __init__(self) -> None:
        self.event = Event()
        self.parked = 0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/longpolling/poll":
            environ["wsgi.input"].read()
            self.parked += 1
            try:
                self.event.wait()
            finally:
                self.parked -= 1
            return self._answer(start_response, ANSWER)
        if path == "/fire":
            event, self.event = self.event, Event()
            event.set()
            return self._answer(start_response, b"{}")
        if path == "/bench/stats":
            return self._answer(start_response, json.dumps({"waiters": self.parked}).encode())
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]

    @staticmethod
    def _answer(start_response: Callable, body: bytes) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    try:
        WSGIServer(listener, ParkingApp(), log=None, handler_class=Handler).serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
