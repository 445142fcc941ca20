"""imbus: Odoo-style long-polling over PostgreSQL LISTEN/NOTIFY.

The public API is small:

* :func:`create_app` / :class:`BusApp`: the WSGI application;
* :func:`sendone` / :func:`sendmany`: queue notifications in a transaction;
* :class:`Database` / :class:`Transaction`: pooled connections and the
  transaction with pre- and post-commit hooks that the send path relies on;
* :func:`channel_with_db`: how channels are named on the wire.

Importing the package loads none of it: each name is resolved on first use.
A gevent server must monkey-patch the process before psycopg2, threading
and the pool are loaded, and the entry points (``python -m bus``, the
``imbus-bus`` console script) import ``bus`` before they can patch.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "BROADCAST": "channels",
    "BusApp": "app",
    "Database": "database",
    "DatabaseUnavailable": "database",
    "RolledBack": "database",
    "Settings": "config",
    "Transaction": "database",
    "channel_with_db": "channels",
    "create_app": "app",
    "sendmany": "models",
    "sendone": "models",
}

__all__ = [
    "BROADCAST",
    "BusApp",
    "Database",
    "DatabaseUnavailable",
    "RolledBack",
    "Settings",
    "Transaction",
    "channel_with_db",
    "create_app",
    "sendmany",
    "sendone",
]

if TYPE_CHECKING:
    from .app import BusApp, create_app
    from .channels import BROADCAST, channel_with_db
    from .config import Settings
    from .database import Database, DatabaseUnavailable, RolledBack, Transaction
    from .models import sendmany, sendone


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bus' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
