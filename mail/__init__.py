"""imbus mail: Discuss-style chat (channels, direct chats, presence) built on
the :mod:`bus`.

The package itself imports nothing heavy on purpose: ``python -m mail.demo``
must be able to monkey-patch the process for gevent before psycopg2, the
pool and threading-based code are loaded. ``mail.create_app`` and
``mail.MailApp`` are therefore resolved on first access.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MailApp", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'mail' has no attribute {name!r}")
