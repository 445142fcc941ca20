"""The chat application: the bus plus Discuss's routes, sessions and
per-caller subscriptions.

    from mail.app import create_app
    app = create_app("postgresql://127.0.0.1/chat", secret_key="...")
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import psycopg2
from werkzeug.wrappers import Request, Response

from bus.app import BusApp
from bus.channels import Target
from bus.config import Settings, require_database_url
from bus.jsonrpc import InvalidParams, SessionExpired, param
from bus.websocket import is_socket

from . import attachment_controllers, attachments, channels, controllers, presence, schema, users
from .message_body import DEFAULT_MAX_BODY_BYTES
from .sessions import SessionCodec, load_secret
from .subscriptions import SubscriptionCache

_logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


class MailApp(BusApp):
    """A WSGI callable serving the bus and the chat.

    ``clock`` returns the current naive UTC datetime; presence is computed
    with it, so tests can move time without sleeping. Attachments of up to
    ``max_attachment_size`` bytes are kept in PostgreSQL, or in
    ``attachment_dir`` when given (:mod:`mail.attachments`). Every
    ``presence_sweep_interval`` seconds, from the first poll until
    :meth:`close`, the app pushes the statuses that changed by silence.
    """

    #: Everything that changes what a poll may hear; each also invalidates
    #: the subscriptions every process keeps (mail.subscriptions).
    resubscribe_types = frozenset({channels.JOINED_TYPE, channels.LEAVE_TYPE, channels.UPDATE_TYPE,
                                   users.SESSION_ENDED_TYPE})

    def __init__(self, settings: Settings, *, secret_key: Optional[str] = None,
                 max_message_body: int = DEFAULT_MAX_BODY_BYTES, clock: Optional[presence.Clock] = None,
                 static_dir: Optional[Path] = None, presence_sweep_interval: float = presence.SWEEP_INTERVAL,
                 attachment_dir: Optional[Path] = None,
                 max_attachment_size: int = attachments.DEFAULT_MAX_SIZE) -> None:
        self.clock = clock or presence.utc_now
        self.max_message_body = max_message_body
        self.attachment_storage = attachments.Storage(attachment_dir)
        self.max_attachment_size = max_attachment_size
        self.static_dir = Path(static_dir) if static_dir else STATIC_DIR
        super().__init__(settings)
        self.sessions = SessionCodec(self.at_start(lambda: load_secret(self.database, secret_key)))
        self.presence = presence.PresenceTracker(self.database)
        # Exact only if the dispatcher reads every row in order, none skipped.
        self.subscription_cache = SubscriptionCache(
            self.database, self.dispatcher, self.resubscribe_types,
            enabled=settings.shared_reads and settings.hold_back_gaps)
        self.presence_sweeper = presence.PresenceSweeper(self.database, self.presence, self.clock,
                                                         presence_sweep_interval)
        mail = controllers.MailController(self)
        mail.register()
        mail.register(attachment_controllers.AttachmentController(self, mail))

    def install_schema(self) -> None:
        super().install_schema()
        schema.install(self.database)

    def finish_response(self, request: Request, response: Response) -> Response:
        """Set or clear the session cookie if the handler asked to."""
        return self.sessions.apply(request, response)

    def subscriptions(self, request: Request, names: list[str], last: int, options: dict) -> Sequence[Target]:
        """Never trusted from the client: the caller's own partner channel and
        the channels it belongs to, plus any named uuid of a *public*
        channel, kept in memory (:mod:`mail.subscriptions`). A poll also
        refreshes the caller's presence. A WebSocket whose session ended
        (logged out) is told so, where a long-poll goes on as anonymous."""
        inactivity = param(options, "bus_inactivity", (int, float), 0)
        if not math.isfinite(inactivity) or inactivity < 0:
            raise InvalidParams("'bus_inactivity' is a number of milliseconds")
        # A name with a NUL character cannot be a uuid (nor be sent to PostgreSQL).
        names = [name for name in names if "\x00" not in name]
        self.presence_sweeper.start()
        session = self.sessions.session(request)
        partner_id, targets = self.subscription_cache.targets(session, names, last)
        if partner_id is None:
            if session is not None and is_socket(request):
                raise SessionExpired("session expired: log in again")
            return targets
        try:
            self.presence.poll(partner_id, inactivity, self.clock())
        except (psycopg2.extensions.TransactionRollbackError, psycopg2.IntegrityError):
            # Presence is best effort: a poll must not fail because another
            # request touched the same row or removed the partner meanwhile.
            _logger.info("presence of partner %s not updated", partner_id, exc_info=True)
        return targets

    def close(self) -> None:
        """Stop the presence sweeps before the pool they use closes."""
        self.presence_sweeper.stop()
        super().close()


def create_app(database_url: Optional[str] = None, *, secret_key: Optional[str] = None,
               max_message_body: int = DEFAULT_MAX_BODY_BYTES, clock: Optional[presence.Clock] = None,
               static_dir: Optional[Path] = None, presence_sweep_interval: float = presence.SWEEP_INTERVAL,
               attachment_dir: Optional[Path] = None, max_attachment_size: int = attachments.DEFAULT_MAX_SIZE,
               **settings: Any) -> MailApp:
    """Build the chat application; ``database_url`` defaults to ``$DATABASE_URL``.
    Other keywords are :class:`bus.config.Settings` fields."""
    return MailApp(Settings(database_url=require_database_url(database_url), **settings), secret_key=secret_key,
                   max_message_body=max_message_body, clock=clock, static_dir=static_dir,
                   presence_sweep_interval=presence_sweep_interval, attachment_dir=attachment_dir,
                   max_attachment_size=max_attachment_size)
