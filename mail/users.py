"""Partners (people who talk) and users (partners who can log in)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from werkzeug.security import check_password_hash, generate_password_hash

from bus.database import Transaction
from bus.models import sendone

from .errors import Forbidden
from .sessions import Session

#: One answer to a wrong login, password or database: which one was wrong is not told.
WRONG_CREDENTIALS = "wrong login, password or database"

#: Told to a user's partner when every session signed so far stops working
#: (logout, a new password): it cuts the parked polls of those sessions, so
#: that they stop hearing what only the user may, and their clients find
#: out whether they are still logged in.
SESSION_ENDED_TYPE = "res.users/session_ended"

# Compared against when the login is unknown, so that a wrong login costs
# the same time as a wrong password and logins cannot be probed by timing.
_DUMMY_HASH = generate_password_hash("imbus: no such user")


@dataclass(frozen=True)
class User:
    id: int
    login: str
    name: str
    partner_id: int
    session_version: int

    @property
    def session(self) -> Session:
        """What a new cookie for this user is signed with."""
        return Session(self.id, self.session_version)

    def info(self) -> dict:
        """The session information the web client keeps about its user."""
        return {
            "uid": self.id,
            "name": self.name,
            "username": self.login,
            "partner_id": self.partner_id,
            "partner_display_name": self.name,
        }


_USER_QUERY = ("SELECT u.id, u.login, p.name, u.partner_id, u.session_version FROM res_users u"
               " JOIN res_partner p ON p.id = u.partner_id")


def create_partner(tx: Transaction, name: str) -> int:
    return tx.execute("INSERT INTO res_partner (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def create_user(tx: Transaction, login: str, password: str, name: str) -> User:
    """A user and its partner."""
    partner_id = create_partner(tx, name)
    uid, session_version = tx.execute(
        "INSERT INTO res_users (login, password, partner_id) VALUES (%s, %s, %s) RETURNING id, session_version",
        (login, generate_password_hash(password), partner_id),
    ).fetchone()
    return User(uid, login, name, partner_id, session_version)


def get_user(tx: Transaction, session: Session) -> Optional[User]:
    """The user a cookie's session belongs to, unless that user was deleted
    or has logged out since the cookie was signed."""
    row = tx.execute(_USER_QUERY + " WHERE u.id = %s AND u.session_version = %s",
                     (session.uid, session.version)).fetchone()
    return User(*row) if row else None


def end_sessions(tx: Transaction, user: User) -> None:
    """Log the user out everywhere: every cookie signed so far stops working."""
    tx.execute("UPDATE res_users SET session_version = session_version + 1 WHERE id = %s", (user.id,))
    sendone(tx, ("res.partner", user.partner_id), SESSION_ENDED_TYPE, {})


def change_password(tx: Transaction, user: User, old_password: str, new_password: str) -> Optional[User]:
    """Set a new password if ``old_password`` is the current one, ending
    every session signed so far (a thief's copy of a cookie included);
    returns the user with its new session version, for a fresh cookie, or
    None if the old password is wrong."""
    row = tx.execute("SELECT password FROM res_users WHERE id = %s FOR UPDATE", (user.id,)).fetchone()
    if row is None or not check_password_hash(row[0], old_password):
        return None
    version = tx.execute(
        "UPDATE res_users SET password = %s, session_version = session_version + 1 WHERE id = %s"
        " RETURNING session_version",
        (generate_password_hash(new_password), user.id),
    ).fetchone()[0]
    sendone(tx, ("res.partner", user.partner_id), SESSION_ENDED_TYPE, {})
    return User(user.id, user.login, user.name, user.partner_id, version)


def get_user_by_login(tx: Transaction, login: str) -> Optional[User]:
    row = tx.execute(_USER_QUERY + " WHERE u.login = %s", (login,)).fetchone()
    return User(*row) if row else None


def authenticate(tx: Transaction, login: str, password: str) -> User:
    """The user whose credentials these are; :class:`Forbidden` for a wrong
    login or password, with one message for both."""
    row = tx.execute(
        "SELECT u.id, u.login, p.name, u.partner_id, u.session_version, u.password FROM res_users u"
        " JOIN res_partner p ON p.id = u.partner_id WHERE u.login = %s",
        (login,),
    ).fetchone()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        raise Forbidden(WRONG_CREDENTIALS)
    if not check_password_hash(row[5], password):
        raise Forbidden(WRONG_CREDENTIALS)
    return User(*row[:5])


def existing_partner_ids(tx: Transaction, partner_ids: list[int]) -> set[int]:
    rows = tx.execute("SELECT id FROM res_partner WHERE id = ANY(%s)", (list(partner_ids),)).fetchall()
    return {row[0] for row in rows}


def missing_partner_names(tx: Transaction, names: list[str]) -> list[str]:
    """Which of ``names`` no partner bears yet."""
    rows = tx.execute("SELECT name FROM res_partner WHERE name = ANY(%s)", (list(names),)).fetchall()
    existing = {row[0] for row in rows}
    return [name for name in names if name not in existing]


def partner_names(tx: Transaction, partner_ids: list[int]) -> dict[int, str]:
    rows = tx.execute("SELECT id, name FROM res_partner WHERE id = ANY(%s)", (list(partner_ids),)).fetchall()
    return dict(rows)


def search_partners(tx: Transaction, term: str, limit: int = 20) -> list[tuple[int, str]]:
    """Partners whose name contains ``term`` (case-insensitive), by name.

    ``%`` and ``_`` in the term are matched literally.
    """
    pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return tx.execute(
        "SELECT id, name FROM res_partner WHERE name ILIKE %s ORDER BY name, id LIMIT %s", (pattern, limit)
    ).fetchall()
