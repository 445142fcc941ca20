"""Monkey-patching the process for gevent, at the only moment it is safe.

gevent must replace the standard library's sockets, locks and threads before
psycopg2, the pool and the dispatcher are loaded: patched later, they keep
the blocking originals and one parked poll blocks the whole process. Each
entry point calls :func:`patch_process` before it imports the application.
"""
from __future__ import annotations

import sys

#: Modules that hold on to unpatched sockets or locks once imported.
_TOO_EARLY = ("psycopg2", "bus.database", "bus.dispatcher", "werkzeug.serving")


def patch_process() -> None:
    """``monkey.patch_all()``, once; refused if it would come too late."""
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        return
    loaded = [name for name in _TOO_EARLY if name in sys.modules]
    if loaded:
        raise RuntimeError(f"gevent must patch the process before {', '.join(loaded)} is imported")
    monkey.patch_all()
