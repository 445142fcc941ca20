"""Who is calling: a signed session cookie, checked on every request.

The cookie carries the user id and the user's ``session_version``, signed
with itsdangerous, so no session table is needed and every process of a
deployment accepts the cookies of the others, as long as they share the
secret. A signature alone would keep a cookie valid for its whole lifetime,
logout or not; the version is checked against the database wherever a
session is resolved and bumped on logout, so that logging out ends the
session everywhere, copies of the cookie included (and, as the version is
per user, every other session of that user too). The secret comes from
configuration or, when none is configured, is generated once and kept in the
database, so that restarting the server does not log everybody out.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Session:
    """What a valid signature vouches for; whether it still holds is for the
    database to say (``users.get_user``, ``channels.poll_subjects``)."""

    uid: int
    version: int


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SessionCodec:
    """Reads the caller's session from the cookie and schedules cookie
    changes for the response."""

    def __init__(self, secret: str, *, max_age: int = MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age = max_age

    def session(self, request: Request) -> Optional[Session]:
        """The session the cookie claims, or None. A missing, tampered,
        expired or malformed cookie is just an anonymous caller, never an
        error."""
        token = request.cookies.get(COOKIE_NAME)
        if not token:
            return None
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        uid, version = data.get("uid"), data.get("sv")
        if _is_int(uid) and _is_int(version):
            return Session(uid, version)
        return None

    def remember(self, request: Request, session: Session) -> None:
        """Log in: the response will carry a fresh cookie."""
        request.environ[_PENDING] = session

    def forget(self, request: Request) -> None:
        """Log out: the response will clear the cookie."""
        request.environ[_PENDING] = _FORGET

    def apply(self, request: Request, response: Response) -> Response:
        """Write the cookie change a handler asked for, if any."""
        pending = request.environ.pop(_PENDING, None)
        # Behind HTTPS the cookie must never travel in clear; plain HTTP
        # (the demo on 127.0.0.1) could not send it back if it were secure.
        if pending is _FORGET:
            response.delete_cookie(COOKIE_NAME, path="/", secure=request.is_secure, httponly=True, samesite="Lax")
        elif isinstance(pending, Session):
            response.set_cookie(
                COOKIE_NAME,
                self._serializer.dumps({"uid": pending.uid, "sv": pending.version}),
                max_age=self.max_age,
                path="/",
                secure=request.is_secure,
                httponly=True,
                samesite="Lax",
            )
        return response
