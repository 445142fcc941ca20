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
import time
from dataclasses import dataclass
from typing import Optional

from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Request, Response

from bus.database import Database

COOKIE_NAME = "session_id"
#: A week, like Odoo's session lifetime.
MAX_AGE = 7 * 24 * 3600
SECRET_ENV = "IMBUS_SECRET_KEY"

#: Cookie headers whose signature checked out, kept at most (then forgotten at once).
MAX_VERIFIED = 20_000

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
        #: Cookie header -> (the session it carries, when it was signed).
        self._verified: dict[str, tuple[Session, int]] = {}

    def session(self, request: Request) -> Optional[Session]:
        """The session the cookie claims, or None. A missing, tampered,
        expired or malformed cookie is just an anonymous caller, never an
        error.

        Every poll of a client sends the same header: once its signature
        checked out, the header is remembered with its signing time, so a
        re-poll skips parsing the header and checking the signature again
        (a quarter of a woken poll's time). Only the age is checked anew."""
        header = request.environ.get("HTTP_COOKIE")
        if not header:
            return None
        known = self._verified.get(header)
        if known is not None and 0 <= int(time.time()) - known[1] <= self.max_age:
            return known[0]
        verified = self._verify(request.cookies.get(COOKIE_NAME))
        if verified is None:
            return None
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()  # they are verified again as they come
        self._verified[header] = verified
        return verified[0]

    def _verify(self, token: Optional[str]) -> Optional[tuple[Session, int]]:
        if not token:
            return None
        try:
            data, signed = self._serializer.loads(token, max_age=self.max_age, return_timestamp=True)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        uid, version = data.get("uid"), data.get("sv")
        if isinstance(uid, int) and isinstance(version, int) and _is_int(uid) and _is_int(version):
            return Session(uid, version), int(signed.timestamp())
        return None

    def token(self, session: Session) -> str:
        """The signed cookie value for ``session``."""
        return self._serializer.dumps({"uid": session.uid, "sv": session.version})

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
                self.token(pending),
                max_age=self.max_age,
                path="/",
                secure=request.is_secure,
                httponly=True,
                samesite="Lax",
            )
        return response
