"""Who is calling: a signed session cookie, checked on every request.

The cookie carries the user id signed with itsdangerous, so no session table
is needed and every process of a deployment accepts the cookies of the
others, as long as they share the secret. The secret comes from
configuration or, when none is configured, is generated once and kept in the
database, so that restarting the server does not log everybody out.
"""
from __future__ import annotations

import os
import secrets
from typing import Optional

from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Request, Response

from bus.database import Database

COOKIE_NAME = "session_id"
#: A week, like Odoo's session lifetime.
MAX_AGE = 7 * 24 * 3600
SECRET_ENV = "IMBUS_SECRET_KEY"

_SALT = "imbus.session"
_PENDING = "imbus.session.pending"
_FORGET = object()


def load_secret(database: Database, configured: Optional[str] = None) -> str:
    """The signing secret: ``configured``, ``$IMBUS_SECRET_KEY``, or the one
    stored in the database (created by whichever process asks first)."""
    secret = configured or os.environ.get(SECRET_ENV)
    if secret:
        return secret
    with database.transaction() as tx:
        tx.execute(
            "INSERT INTO imbus_config (key, value) VALUES ('session_secret', %s) ON CONFLICT (key) DO NOTHING",
            (secrets.token_urlsafe(48),),
        )
        return tx.execute("SELECT value FROM imbus_config WHERE key = 'session_secret'").fetchone()[0]


class SessionCodec:
    """Reads the caller's user id from the cookie and schedules cookie changes
    for the response."""

    def __init__(self, secret: str, *, max_age: int = MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age = max_age

    def uid(self, request: Request) -> Optional[int]:
        """The logged-in user id, or None. A missing, tampered, expired or
        malformed cookie is just an anonymous caller, never an error."""
        token = request.cookies.get(COOKIE_NAME)
        if not token:
            return None
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except BadData:
            return None
        uid = data.get("uid") if isinstance(data, dict) else None
        if isinstance(uid, int) and not isinstance(uid, bool):
            return uid
        return None

    def remember(self, request: Request, uid: int) -> None:
        """Log ``uid`` in: the response will carry a fresh cookie."""
        request.environ[_PENDING] = uid

    def forget(self, request: Request) -> None:
        """Log out: the response will clear the cookie."""
        request.environ[_PENDING] = _FORGET

    def apply(self, request: Request, response: Response) -> Response:
        """Write the cookie change a handler asked for, if any."""
        pending = request.environ.pop(_PENDING, None)
        if pending is _FORGET:
            response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Lax")
        elif pending is not None:
            response.set_cookie(
                COOKIE_NAME,
                self._serializer.dumps({"uid": pending}),
                max_age=self.max_age,
                path="/",
                httponly=True,
                samesite="Lax",
            )
        return response
