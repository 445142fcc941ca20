"""The chat's HTTP routes: check the caller and the parameters, hand over to
the models, and turn what the models refuse into the JSON-RPC error a client
reads. No SQL here."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from bus.database import Transaction
from bus.jsonrpc import AccessDenied, InvalidParams, NotFound, RPCError, SessionExpired, param

from . import channels, errors, messages, presence, reactions, users
from .sessions import Session
from .users import User

if TYPE_CHECKING:
    from .app import MailApp

MAX_PARTNER_SEARCH = 50
MAX_IDS = 1000

#: What each refusal of the chat is on the wire.
RPC_ERRORS: dict[type[errors.ChatError], type[RPCError]] = {
    errors.NotFound: NotFound,
    errors.InvalidInput: InvalidParams,
    errors.Forbidden: AccessDenied,
}
T = TypeVar("T")


def translate(table: dict[type[errors.ChatError], T], error: errors.ChatError) -> T:
    """What ``table`` says of ``error``'s kind: its class or the nearest
    base listed, so that a finer refusal is answered as its kind is."""
    for kind in type(error).__mro__:
        if kind in table:
            return table[kind]
    raise TypeError(f"no translation for {type(error).__name__}") from error


@dataclass(frozen=True)
class Route:
    path: str
    auth: str  # "user": logged-in callers only; "public": anyone
    kind: str  # "json": a JSON-RPC call; "http": a plain request
    methods: tuple[str, ...] = ("GET",)  # of a plain request


def route(path: str, *, auth: str = "user", kind: str = "json", methods: tuple[str, ...] = ("GET",)) -> Callable:
    """Mark a :class:`MailController` method as the handler of ``path``, as
    Odoo's ``@http.route`` does. A JSON route's method takes the request and
    its params, plus the caller's session when ``auth="user"``; a plain
    route's method takes the request."""
    def mark(method: Any) -> Any:
        method.route = Route(path, auth, kind, methods)
        return method
    return mark


def text(params: dict, name: str, default: Any = ..., *, required: bool = False) -> Any:
    """A string parameter. PostgreSQL text cannot hold NUL characters, so
    they are refused here with a clear error instead of failing in the
    database."""
    value = param(params, name, str, default, required=required)
    if isinstance(value, str) and "\x00" in value:
        raise InvalidParams(f"parameter {name!r} contains a NUL character")
    return value


def int_list(params: dict, name: str, default: Optional[list] = None) -> list[int]:
    """A parameter that must be a list of integers (JSON booleans refused)."""
    value = param(params, name, list, default if default is not None else ...)
    if len(value) > MAX_IDS or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidParams(f"parameter {name!r} must be a list of at most {MAX_IDS} integers")
    return value


def post_arguments(post_data: dict) -> dict:
    """``message_post``'s keyword arguments from Odoo's ``post_data``."""
    body = text(post_data, "body", required=True)
    message_type = text(post_data, "message_type", "comment")
    subtype_xmlid = text(post_data, "subtype_xmlid", messages.DEFAULT_SUBTYPE)
    partner_ids = int_list(post_data, "partner_ids", [])
    return {"body": body, "message_type": message_type, "subtype_xmlid": subtype_xmlid, "partner_ids": partner_ids,
            "parent_id": param(post_data, "parent_id", int, None),
            "attachment_ids": int_list(post_data, "attachment_ids", []),
            "plain_text": param(post_data, "plain_text", bool, False)}


def password_fields(params: dict) -> dict[str, str]:
    """Odoo's ``fields``: a form's ``[{"name": ..., "value": ...}]``."""
    fields = param(params, "fields", list, required=True)
    if len(fields) > 10 or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                   and isinstance(f.get("value"), str) for f in fields):
        raise InvalidParams("'fields' is a list of {name, value} strings")
    return {f["name"]: text(f, "value") for f in fields}


class MailController:
    """Discuss's routes, one method each, registered on a :class:`MailApp`
    by :meth:`register`."""

    def __init__(self, app: MailApp) -> None:
        self.app = app
        self.database = app.database

    def register(self, routes: Optional[object] = None) -> None:
        """Add every ``@route`` method of ``routes`` (by default this
        controller; another object's routes share its session checks and
        error translation) to the app."""
        routes = self if routes is None else routes
        for name, method in inspect.getmembers(type(routes), lambda member: hasattr(member, "route")):
            spec, handler = method.route, getattr(routes, name)
            if spec.kind == "http":
                self.app.http_route(spec.path, spec.methods)(handler)
            else:
                self.app.json_route(spec.path)(self._json_view(handler, spec.auth))

    def _json_view(self, handler: Callable, auth: str) -> Callable[[Request, dict], Any]:
        """The handler as the app calls it, the one place where what the chat
        refuses becomes a JSON-RPC error."""
        def view(request: Request, params: dict) -> Any:
            try:
                if auth == "user":
                    return handler(request, params, self._session(request))
                return handler(request, params)
            except errors.ChatError as error:
                raise translate(RPC_ERRORS, error)(str(error)) from None
        return view

    # -- who is calling -------------------------------------------------------------

    def _session(self, request: Request) -> Session:
        """The caller's session, checked before the parameters, as Odoo's
        ``auth="user"`` does: an anonymous caller learns nothing but "log in",
        and the client reacts to that error (code 100) with the login screen."""
        session = self.app.sessions.session(request)
        if session is None:
            raise SessionExpired("session expired: log in again")
        return session

    def _user(self, tx: Transaction, session: Session) -> User:
        """The user behind a valid cookie, unless it was deleted or logged
        out since."""
        user = users.get_user(tx, session)
        if user is None:
            raise SessionExpired("session expired: log in again")
        return user

    def _member(self, tx: Transaction, session: Session, channel_id: int) -> tuple[User, channels.Channel]:
        """The caller and a channel it belongs to (not found for any other channel)."""
        user = self._user(tx, session)
        return user, channels.member_channel(tx, channel_id, user.partner_id)

    def _optional_user(self, tx: Transaction, request: Request) -> Optional[User]:
        """The caller's user, or None when anonymous (no cookie, a stale one)."""
        session = self.app.sessions.session(request)
        return users.get_user(tx, session) if session is not None else None

    # -- session ---------------------------------------------------------------------

    @route("/web/session/authenticate", auth="public")
    def authenticate(self, request: Request, params: dict) -> Any:
        login = text(params, "login", required=True)
        password = text(params, "password", required=True)
        db = text(params, "db", "")
        if db and db != self.database.dbname:
            raise AccessDenied(users.WRONG_CREDENTIALS)
        with self.database.transaction() as tx:
            user = users.authenticate(tx, login, password)
        self.app.sessions.remember(request, user.session)
        return {**user.info(), "db": self.database.dbname}

    @route("/web/session/get_session_info", auth="public")
    def get_session_info(self, request: Request, params: dict) -> Any:
        with self.database.transaction() as tx:
            user = self._optional_user(tx, request)
        if user is None:
            return {"uid": False, "name": False, "username": False, "partner_id": False, "db": self.database.dbname}
        return {**user.info(), "db": self.database.dbname}

    @route("/web/session/destroy", auth="public")
    def destroy(self, request: Request, params: dict) -> Any:
        with self.database.transaction() as tx:
            user = self._optional_user(tx, request)
            if user is not None:
                users.end_sessions(tx, user)
                presence.disconnect(tx, user.partner_id)
        if user is not None:
            self.app.presence.forget(user.partner_id)
        self.app.sessions.forget(request)
        return None

    @route("/web/session/change_password")
    def change_password(self, request: Request, params: dict, session: Session) -> Any:
        """Odoo's route and answers: ``fields`` as a form serialises them,
        ``{"new_password": ...}`` on success, ``{"error", "title"}`` for what
        the user typed wrong. Every other session of the user ends; the
        caller's continues with a fresh cookie."""
        typed = password_fields(params)
        old, new, confirm = (typed.get(name, "") for name in ("old_pwd", "new_password", "confirm_pwd"))
        if not (old.strip() and new.strip() and confirm.strip()):
            return {"error": "You cannot leave any password empty.", "title": "Change Password"}
        if new != confirm:
            return {"error": "The new password and its confirmation must be identical.", "title": "Change Password"}
        with self.database.transaction() as tx:
            changed = users.change_password(tx, self._user(tx, session), old, new)
        if changed is None:
            return {"error": "The old password you provided is incorrect, your password was not changed.",
                    "title": "Change Password"}
        self.app.sessions.remember(request, changed.session)
        return {"new_password": new}

    # -- messaging ---------------------------------------------------------------------

    @route("/mail/init_messaging")
    def init_messaging(self, request: Request, params: dict, session: Session) -> Any:
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            channel_ids = channels.partner_channel_ids(tx, user.partner_id)
            return {
                "current_partner": {"id": user.partner_id, "name": user.name},
                "current_user_id": user.id,
                "channels": channels.channel_infos(tx, channel_ids, user.partner_id, now),
            }

    @route("/mail/message/post")
    def message_post(self, request: Request, params: dict, session: Session) -> Any:
        thread_model = text(params, "thread_model", required=True)
        thread_id = param(params, "thread_id", int, required=True)
        post_data = param(params, "post_data", dict, required=True)
        if thread_model != "mail.channel":
            raise InvalidParams("only mail.channel threads can be posted on")
        arguments = post_arguments(post_data)
        with self.database.transaction() as tx:
            user, channel = self._member(tx, session, thread_id)
            return messages.message_post(tx, channel, user.partner_id, **arguments,
                                         max_body_bytes=self.app.max_message_body)

    @route("/mail/message/update_content")
    def update_content(self, request: Request, params: dict, session: Session) -> Any:
        message_id = param(params, "message_id", int, required=True)
        body = text(params, "body", required=True)
        plain_text = param(params, "plain_text", bool, False)
        if int_list(params, "attachment_ids", []):
            raise InvalidParams("an edit cannot change a message's attachments")
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return messages.update_content(tx, self.app.attachment_storage, message_id, user.partner_id, body,
                                           max_body_bytes=self.app.max_message_body, plain_text=plain_text)

    @route("/mail/message/add_reaction")
    def add_reaction(self, request: Request, params: dict, session: Session) -> Any:
        return self._react(params, session, reactions.add_reaction)

    @route("/mail/message/remove_reaction")
    def remove_reaction(self, request: Request, params: dict, session: Session) -> Any:
        return self._react(params, session, reactions.remove_reaction)

    def _react(self, params: dict, session: Session, change: Callable[..., dict]) -> dict:
        message_id = param(params, "message_id", int, required=True)
        content = text(params, "content", required=True)
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return change(tx, message_id, user.partner_id, content)

    @route("/mail/channel/messages")
    def channel_messages(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        max_id = param(params, "max_id", int, None)
        min_id = param(params, "min_id", int, None)
        limit = param(params, "limit", int, 30)
        if limit < 1:
            raise InvalidParams("'limit' must be positive")
        with self.database.transaction() as tx:
            _, channel = self._member(tx, session, channel_id)
            return messages.channel_messages(tx, channel, max_id=max_id, min_id=min_id, limit=limit)

    @route("/mail/channel/set_last_seen_message")
    def set_last_seen_message(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        last_message_id = param(params, "last_message_id", int, required=True)
        with self.database.transaction() as tx:
            user, channel = self._member(tx, session, channel_id)
            return channels.set_last_seen(tx, channel, user.partner_id, last_message_id)

    @route("/mail/channel/notify_typing")
    def notify_typing(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        is_typing = param(params, "is_typing", bool, required=True)
        with self.database.transaction() as tx:
            user, channel = self._member(tx, session, channel_id)
            channels.notify_typing(tx, channel, user.partner_id, user.name, is_typing)
        return True

    # -- channels ------------------------------------------------------------------------

    @route("/mail/channel/create")
    def create_channel(self, request: Request, params: dict, session: Session) -> Any:
        name = text(params, "name", required=True)
        privacy = text(params, "privacy", "public")
        description = text(params, "description", None)
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            channel_id = channels.create_channel(tx, user.partner_id, name, now, privacy, description)
            return channels.channel_infos(tx, [channel_id], user.partner_id, now)[0]

    @route("/mail/channel/join")
    def join(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.join(tx, channel_id, user.partner_id, now)

    @route("/mail/channel/add_members")
    def add_members(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        partner_ids = int_list(params, "partner_ids")
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.add_members(tx, channel_id, user.partner_id, partner_ids, now)

    @route("/mail/channel/leave")
    def leave(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            channels.leave(tx, channel_id, user.partner_id, now)
        return True

    @route("/mail/channel/remove_member")
    def remove_member(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        member_id = param(params, "partner_id", int, required=True)
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.remove_member(tx, channel_id, user.partner_id, member_id, now)

    @route("/mail/channel/set_privacy")
    def set_privacy(self, request: Request, params: dict, session: Session) -> Any:
        channel_id = param(params, "channel_id", int, required=True)
        privacy = text(params, "privacy", required=True)
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.set_privacy(tx, channel_id, user.partner_id, privacy, now)

    @route("/mail/channel/get_or_create_chat")
    def get_or_create_chat(self, request: Request, params: dict, session: Session) -> Any:
        partner_ids = int_list(params, "partner_ids")
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            others = set(partner_ids) - {user.partner_id}
            if len(others) > 1:
                raise InvalidParams("a chat is between two people: give one partner id")
            other = others.pop() if others else user.partner_id
            return channels.get_or_create_chat(tx, user.partner_id, other, now)

    @route("/mail/channel/create_group")
    def create_group(self, request: Request, params: dict, session: Session) -> Any:
        partner_ids = int_list(params, "partner_ids")
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.create_group(tx, user.partner_id, partner_ids, now)

    @route("/mail/channel/search_public")
    def search_public(self, request: Request, params: dict, session: Session) -> Any:
        now = self.app.clock()
        with self.database.transaction() as tx:
            user = self._user(tx, session)
            return channels.search_public(tx, user.partner_id, now)

    @route("/mail/partner/search")
    def partner_search(self, request: Request, params: dict, session: Session) -> Any:
        term = text(params, "term", "")
        limit = min(max(param(params, "limit", int, 20), 1), MAX_PARTNER_SEARCH)
        now = self.app.clock()
        with self.database.transaction() as tx:
            self._user(tx, session)
            found = users.search_partners(tx, term.strip(), limit)
            status = presence.statuses(tx, [pid for pid, _ in found], now)
        return [{"id": pid, "name": name, "im_status": status[pid]} for pid, name in found]

    @route("/longpolling/im_status")
    def im_status(self, request: Request, params: dict, session: Session) -> Any:
        partner_ids = int_list(params, "partner_ids")
        now = self.app.clock()
        with self.database.transaction() as tx:
            self._user(tx, session)
            known = users.existing_partner_ids(tx, partner_ids)
            status = presence.statuses(tx, sorted(known), now)
        return [{"id": pid, "im_status": value} for pid, value in status.items()]

    # -- the web page ----------------------------------------------------------------------

    @route("/", auth="public", kind="http")
    def index(self, request: Request) -> Response:
        return send_from_directory(self.app.static_dir, "index.html", request.environ, max_age=0)

    @route("/static/<path:filename>", auth="public", kind="http")
    def static(self, request: Request) -> Response:
        # send_from_directory refuses paths that leave the folder (404).
        filename = request.path[len("/static/"):]
        return send_from_directory(self.app.static_dir, filename, request.environ, max_age=0)
