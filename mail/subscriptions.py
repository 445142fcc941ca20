"""What a poll may hear, from memory: each session's partner and channels,
and which names are uuids of public channels, kept per process so that a
re-poll costs no query, and invalidated through the bus itself so that
several processes stay exact.

Deriving them from the database on every poll cost one query per woken
poll: with 1,000 members in a channel, 1,000 queries per message. Here they
are derived once and kept. The notifications that already tell a client
that what it hears has changed (the app's ``resubscribe_types``: joined,
left or removed, a channel's privacy, its sessions ended) are written in the
very transaction that makes the change, and every process's dispatcher reads
every row and hands it to :meth:`SubscriptionCache.observe` before any poll
can see it. Such a notification on a partner's channel drops that partner's
sessions; on a string channel (a channel's uuid), that name.

Why no poll ever hears a channel it may no longer hear:

* rows are handed over before the dispatcher's ``position`` moves past them,
  so an entry still held reflects every change up to the position, and it
  is used only for polls whose ``last`` is at most the position. A client
  that saw a change through another process before this one has read it
  comes with a ``last`` above the position: it is answered from the
  database, and that answer is not kept (a client's ``last`` vouches for
  nothing);
* an entry remembers the position it was derived from (read before its
  query) and is kept only if no change was handed over since: one derived
  from a snapshot older than a change it was not told of is never kept;
* a poll already parked with channels it may no longer hear receives the
  same notification (on the partner's channel, or on the uuid it listens
  to), which ends its answer; the client's next poll is derived anew.

This needs every row read in id order with no gap skipped: with the gap
hold-back or the shared reads switched off the cache is off, and every poll
reads the database. Changes made to the tables behind the app's back (SQL by
hand) are not seen until an entry is dropped for another reason.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from bus.channels import BROADCAST, Row, Target, message_type_prefixes
from bus.database import Database
from bus.dispatcher import Dispatcher

from . import channels
from .sessions import Session

#: Entries kept at most, oldest dropped first (a dropped entry only costs
#: the next poll of its session, or naming it, one query).
MAX_SESSIONS = 100_000
MAX_NAMES = 100_000

_UNKNOWN = object()


@dataclass(frozen=True)
class Access:
    """What one session may hear, as derived from the database."""

    #: None for a session that is no longer valid (logged out since).
    partner_id: Optional[int]
    channel_ids: frozenset[int]
    #: What its polls hear before any named uuid: broadcast, the partner's
    #: own channel, its channels.
    targets: tuple[Target, ...]
    #: The dispatcher position before the query it was derived from.
    valid_from: int


_ANONYMOUS = Access(None, frozenset(), (BROADCAST,), 0)


def _access(subjects: channels.PollSubjects, valid_from: int) -> Access:
    if subjects.partner_id is None:
        return Access(None, frozenset(), (BROADCAST,), valid_from)
    targets: tuple[Target, ...] = (BROADCAST, ("res.partner", subjects.partner_id),
                                   *(("mail.channel", channel_id) for channel_id in subjects.channel_ids))
    return Access(subjects.partner_id, frozenset(subjects.channel_ids), targets, valid_from)


class SubscriptionCache:
    """One process's memory of who may hear what; see the module docstring.

    ``types`` are the notification types that change what their receivers
    hear: the application's ``resubscribe_types``, so that whatever ends a
    parked poll's answer also invalidates what was kept.
    """

    def __init__(self, database: Database, dispatcher: Dispatcher, types: Iterable[str], *,
                 enabled: bool = True) -> None:
        self.database = database
        self.enabled = enabled
        self._dispatcher = dispatcher
        self._prefixes = message_type_prefixes(types)
        self._sessions: dict[Session, Access] = {}
        self._by_partner: dict[int, set[Session]] = {}
        #: name -> id of the public channel whose uuid it is, or None
        self._names: dict[str, Optional[int]] = {}
        #: The id of the newest row that invalidated something.
        self._invalidated_at = 0
        self._lock = threading.Lock()
        if enabled:
            dispatcher.observe(self.observe)

    def targets(self, session: Optional[Session], names: Sequence[str],
                last: int) -> tuple[Optional[int], Sequence[Target]]:
        """The caller's partner (None if anonymous or logged out) and what a
        poll of ``session`` naming ``names`` after ``last`` hears: broadcast,
        the partner's channel and its channels, and the named uuids of public
        channels it does not belong to (it hears those as a member)."""
        position = self._dispatcher.position
        trusted = self.enabled and last <= position and self._dispatcher.connected.is_set()
        access = _ANONYMOUS if session is None else (self._sessions.get(session) if trusted else None)
        public: dict[str, Optional[int]] = {}
        unknown = []
        for name in names:
            channel_id = self._names.get(name, _UNKNOWN) if trusted else _UNKNOWN
            if channel_id is _UNKNOWN:
                unknown.append(name)
            else:
                public[name] = channel_id  # type: ignore[assignment]
        if access is None or unknown:
            derived, found = self._derive(session if access is None else None, unknown, position, trusted)
            access = access or derived
            public.update(found)
        if not public:
            return access.partner_id, access.targets
        heard = [name for name, channel_id in public.items()
                 if channel_id is not None and channel_id not in access.channel_ids]
        return access.partner_id, [*access.targets, *heard]

    def _derive(self, session: Optional[Session], names: list[str], position: int,
                keep: bool) -> tuple[Access, dict[str, Optional[int]]]:
        subjects = channels.poll_subjects(self.database, session, names)
        access = _access(subjects, position)
        found = {name: subjects.public_channels.get(name) for name in names}
        if keep:
            self._keep(session, access, found)
        return access, found

    def _keep(self, session: Optional[Session], access: Access, found: dict[str, Optional[int]]) -> None:
        with self._lock:
            if self._invalidated_at > access.valid_from:
                return  # a change came in while the query ran: it may predate it
            if session is not None:
                self._forget_session(session)
                while len(self._sessions) >= MAX_SESSIONS:
                    self._forget_session(next(iter(self._sessions)))
                self._sessions[session] = access
                if access.partner_id is not None:
                    self._by_partner.setdefault(access.partner_id, set()).add(session)
            for name, channel_id in found.items():
                self._names.pop(name, None)
                while len(self._names) >= MAX_NAMES:
                    del self._names[next(iter(self._names))]
                self._names[name] = channel_id

    def _forget_session(self, session: Session) -> None:
        access = self._sessions.pop(session, None)
        if access is not None and access.partner_id is not None:
            sessions = self._by_partner.get(access.partner_id)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._by_partner[access.partner_id]

    def observe(self, rows: Sequence[Row]) -> None:
        """The dispatcher's hook: drop what the changes among ``rows`` make
        stale, before any poll can see them."""
        prefixes = self._prefixes
        changes = [channel for _, channel, message in rows if message.startswith(prefixes)]
        if not changes:
            return
        with self._lock:
            self._invalidated_at = rows[-1][0]
            try:
                for channel in changes:
                    self._forget(channel)
            except Exception:
                # Keeping anything now could keep a stale entry: forget all.
                self._sessions.clear()
                self._by_partner.clear()
                self._names.clear()
                raise

    def _forget(self, channel: str) -> None:
        """Drop what listeners of ``channel`` (a channel key) were told they hear."""
        key = json.loads(channel)
        if len(key) == 2:  # [db, name]: the uuid of a channel whose privacy changed
            self._names.pop(key[1], None)
        elif key[1] == "res.partner":
            for session in self._by_partner.pop(key[2], ()):
                self._sessions.pop(session, None)
