"""gunicorn's gevent worker, told when to drain the application.

    gunicorn -k bus.gunicorn_worker.GeventWorker 'bus.app:create_app()'

On SIGTERM gunicorn's own gevent worker stops accepting and waits up to
``--graceful-timeout`` for its connections, then cuts them: a parked poll
is one, so every client of the worker loses its poll without an answer and
the worker always takes the whole grace period to stop. This worker also
drains the application (:meth:`bus.app.BusApp.drain`): parked polls answer
at once, later requests get a JSON-RPC 503, and the worker exits as soon as
the answers are out.
"""
from __future__ import annotations

from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker


class GeventWorker(_GunicornGeventWorker):
    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        drain = getattr(self.wsgi, "drain", None)
        if drain is not None:
            # Out of the signal handler: draining takes locks and wakes greenlets.
            gevent.spawn(drain)
