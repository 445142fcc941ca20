"""imbus: Odoo-style long-polling over PostgreSQL LISTEN/NOTIFY.

The public API is small:

* :func:`create_app` / :class:`BusApp`: the WSGI application;
* :func:`sendone` / :func:`sendmany`: queue notifications in a transaction;
* :class:`Database` / :class:`Transaction`: pooled connections and the
  transaction with pre- and post-commit hooks that the send path relies on;
* :func:`channel_with_db`: how channels are named on the wire.
"""
from .app import BusApp, create_app
from .channels import BROADCAST, channel_with_db
from .config import Settings
from .database import Database, DatabaseUnavailable, RolledBack, Transaction
from .models import sendmany, sendone

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
