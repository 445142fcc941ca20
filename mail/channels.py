"""Discuss channels and their members: who may read and write where.

Three kinds of conversation share one table, as in Odoo: ``channel`` (named,
public or private), ``chat`` (two people, found-or-created) and ``group``.
Every check that a caller belongs to a conversation happens here, and a
conversation the caller may not see is reported as *not found*, so a
stranger cannot tell "forbidden" from "does not exist".
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Optional

from bus.channels import Target
from bus.database import Database, Transaction, execute_prepared
from bus.models import sendmany, sendone

from . import presence, users
from .errors import Forbidden, InvalidInput, NotFound
from .sessions import Session

JOINED_TYPE = "mail.channel/joined"
LEAVE_TYPE = "mail.channel/leave"
#: Odoo's "these fields of the channel changed"; here only its privacy.
UPDATE_TYPE = "mail.channel/insert"
SEEN_TYPE = "mail.channel.partner/seen"
TYPING_TYPE = "mail.channel.partner/typing_status"

MAX_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 1024
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    channel_type: str
    public: str
    uuid: str
    description: Optional[str]

    @property
    def is_public_channel(self) -> bool:
        """Anyone may join it and listen to it by its uuid."""
        return self.channel_type == "channel" and self.public == "public"


_CHANNEL_COLUMNS = "c.id, c.name, c.channel_type, c.public, c.uuid, c.description"


def format_datetime(value: Optional[datetime]) -> Optional[str]:
    """Odoo's wire format for datetimes: UTC, seconds, no timezone suffix."""
    return value.strftime(DATETIME_FORMAT) if value is not None else None


def member_channel(tx: Transaction, channel_id: int, partner_id: int) -> Channel:
    """The channel, if ``partner_id`` belongs to it; :class:`NotFound` otherwise."""
    row = tx.execute(
        f"SELECT {_CHANNEL_COLUMNS} FROM mail_channel c"
        " JOIN mail_channel_partner m ON m.channel_id = c.id AND m.partner_id = %s WHERE c.id = %s",
        (partner_id, channel_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"channel {channel_id} not found")
    return Channel(*row)


def _channel(tx: Transaction, channel_id: int) -> Optional[Channel]:
    row = tx.execute(f"SELECT {_CHANNEL_COLUMNS} FROM mail_channel c WHERE c.id = %s", (channel_id,)).fetchone()
    return Channel(*row) if row else None


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("a channel needs a name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"a channel name has at most {MAX_NAME_LENGTH} characters")
    return name


def _check_privacy(privacy: str) -> None:
    if privacy not in ("public", "private"):
        raise InvalidInput("privacy is 'public' or 'private'")


def create_channel(tx: Transaction, creator_partner_id: int, name: str, now: datetime, privacy: str = "public",
                   description: Optional[str] = None) -> int:
    """A new named channel with its creator as first member (and owner: see
    :func:`owner_id`). The creator's open clients are told, as for any
    newcomer, so that their polls start hearing it."""
    _check_privacy(privacy)
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(f"a description has at most {MAX_DESCRIPTION_LENGTH} characters")
    channel_id = tx.execute(
        "INSERT INTO mail_channel (name, channel_type, public, uuid, description)"
        " VALUES (%s, 'channel', %s, %s, %s) RETURNING id",
        (_clean_name(name), privacy, str(uuid.uuid4()), description or None),
    ).fetchone()[0]
    _announce_joined(tx, channel_id, _insert_members(tx, channel_id, [creator_partner_id]), now)
    return channel_id


def _insert_members(tx: Transaction, channel_id: int, partner_ids: Iterable[int]) -> list[int]:
    """Add members; return those who were not members yet.

    Newcomers start with the history marked as seen: joining a busy channel
    should not greet them with hundreds of unread messages.
    """
    rows = tx.execute(
        "INSERT INTO mail_channel_partner (channel_id, partner_id, seen_message_id, fetched_message_id)"
        " SELECT %(cid)s, p, last.id, last.id FROM unnest(%(pids)s::integer[]) AS p"
        " LEFT JOIN LATERAL (SELECT max(id) AS id FROM mail_message"
        "  WHERE model = 'mail.channel' AND res_id = %(cid)s) AS last ON true"
        " ON CONFLICT (channel_id, partner_id) DO NOTHING RETURNING partner_id",
        {"cid": channel_id, "pids": sorted(set(partner_ids))},
    ).fetchall()
    return [row[0] for row in rows]


def add_member_ids(tx: Transaction, channel_id: int, partner_ids: Iterable[int]) -> list[int]:
    """Add members without telling anyone (set-up code: nobody is listening
    yet; a process already serving these partners hears the channel only
    once their subscriptions are next invalidated)."""
    return _insert_members(tx, channel_id, partner_ids)


def _announce_joined(tx: Transaction, channel_id: int, partner_ids: list[int], now: datetime) -> None:
    """Tell each newcomer's open clients about the channel, so it shows up at once."""
    sendmany(tx, [
        (("res.partner", partner_id), JOINED_TYPE, channel_infos(tx, [channel_id], partner_id, now)[0])
        for partner_id in partner_ids
    ])


def join(tx: Transaction, channel_id: int, partner_id: int, now: datetime) -> dict:
    """Join a public channel (only those can be joined uninvited)."""
    channel = _channel(tx, channel_id)
    if channel is None or not channel.is_public_channel:
        raise NotFound(f"channel {channel_id} not found")
    added = _insert_members(tx, channel_id, [partner_id])
    _announce_joined(tx, channel_id, added, now)
    return channel_infos(tx, [channel_id], partner_id, now)[0]


def add_members(tx: Transaction, channel_id: int, partner_id: int, new_partner_ids: list[int],
                now: datetime) -> dict:
    """Invite partners to a channel or group the caller belongs to."""
    channel = member_channel(tx, channel_id, partner_id)
    if channel.channel_type == "chat":
        raise InvalidInput("a chat is between two people; create a channel to talk with more")
    unknown = set(new_partner_ids) - users.existing_partner_ids(tx, new_partner_ids)
    if unknown:
        raise InvalidInput(f"unknown partners: {sorted(unknown)}")
    added = _insert_members(tx, channel_id, new_partner_ids)
    _announce_joined(tx, channel_id, added, now)
    return channel_infos(tx, [channel_id], partner_id, now)[0]


def owner_id(tx: Transaction, channel_id: int) -> Optional[int]:
    """The partner who runs a named channel: its oldest member, that is its
    creator until they leave, then whoever has been in it longest, so a
    channel never lacks one while it has members."""
    row = tx.execute("SELECT partner_id FROM mail_channel_partner WHERE channel_id = %s ORDER BY id LIMIT 1",
                     (channel_id,)).fetchone()
    return row[0] if row else None


def _remove_member(tx: Transaction, channel: Channel, partner_id: int, now: datetime) -> None:
    """Remove a member and tell that partner's clients (Odoo's
    ``mail.channel/leave``, with the channel as they saw it, unpinned): the
    notification also cuts their parked polls, so that they stop hearing the
    channel from here on."""
    info = channel_infos(tx, [channel.id], partner_id, now)[0]
    removed = tx.execute("DELETE FROM mail_channel_partner WHERE channel_id = %s AND partner_id = %s RETURNING id",
                         (channel.id, partner_id)).fetchone()
    if removed is None:
        raise InvalidInput(f"partner {partner_id} is not a member of channel {channel.id}")
    sendone(tx, ("res.partner", partner_id), LEAVE_TYPE, {**info, "is_pinned": False})


def leave(tx: Transaction, channel_id: int, partner_id: int, now: datetime) -> None:
    """Leave a channel or a group (Odoo's ``action_unfollow``). A chat cannot
    be left: it is found again whenever either side opens it."""
    channel = member_channel(tx, channel_id, partner_id)
    if channel.channel_type == "chat":
        raise InvalidInput("a chat cannot be left")
    _remove_member(tx, channel, partner_id, now)


def remove_member(tx: Transaction, channel_id: int, partner_id: int, member_id: int, now: datetime) -> dict:
    """Remove ``member_id`` from a conversation the caller belongs to: from a
    group, any member may (as any member may invite); from a named channel,
    only its owner (:func:`owner_id`); from a chat, nobody. Removing oneself
    is leaving."""
    channel = member_channel(tx, channel_id, partner_id)
    if channel.channel_type == "chat":
        raise InvalidInput("a chat is between two people; nobody can be removed from it")
    if member_id != partner_id and channel.channel_type == "channel" and owner_id(tx, channel.id) != partner_id:
        raise Forbidden("only the channel's owner may remove other members")
    _remove_member(tx, channel, member_id, now)
    return channel_infos(tx, [channel.id], partner_id, now)[0]


def audience_targets(channel: Channel) -> list[Target]:
    """Who follows a channel's messages: its members and, for a public
    channel, the pages listening to its uuid (a public link)."""
    targets: list[Target] = [("mail.channel", channel.id)]
    if channel.is_public_channel:
        targets.append(channel.uuid)
    return targets


def set_privacy(tx: Transaction, channel_id: int, partner_id: int, privacy: str, now: datetime) -> dict:
    """Make a named channel public or private; only its owner may. Members
    and the listeners of its uuid are told (``mail.channel/insert``): for
    the latter this ends hearing the channel by its uuid once it is private,
    and the notification cuts their parked polls so that they do."""
    _check_privacy(privacy)
    channel = member_channel(tx, channel_id, partner_id)
    if channel.channel_type != "channel":
        raise InvalidInput("only named channels can be public; chats and groups are private")
    if owner_id(tx, channel.id) != partner_id:
        raise Forbidden("only the channel's owner may change its privacy")
    changed = tx.execute("UPDATE mail_channel SET public = %s WHERE id = %s AND public <> %s RETURNING id",
                         (privacy, channel.id, privacy)).fetchone()
    if changed is not None:
        payload = {"id": channel.id, "public": privacy}
        sendmany(tx, [(("mail.channel", channel.id), UPDATE_TYPE, payload), (channel.uuid, UPDATE_TYPE, payload)])
    return channel_infos(tx, [channel.id], partner_id, now)[0]


def get_or_create_chat(tx: Transaction, partner_id: int, other_partner_id: int, now: datetime) -> dict:
    """The direct conversation between two partners, created on first use.

    Concurrent calls for the same pair meet on the unique ``chat_key``: the
    second INSERT waits for the first transaction and then finds its row, so
    exactly one chat ever exists per pair.
    """
    names = users.partner_names(tx, [partner_id, other_partner_id])
    if other_partner_id not in names:
        raise InvalidInput(f"unknown partner: {other_partner_id}")
    low, high = sorted((partner_id, other_partner_id))
    chat_key = f"{low}-{high}"
    name = ", ".join(names[pid] for pid in dict.fromkeys((low, high)))
    created = tx.execute(
        "INSERT INTO mail_channel (name, channel_type, public, uuid, chat_key)"
        " VALUES (%s, 'chat', 'private', %s, %s) ON CONFLICT (chat_key) DO NOTHING RETURNING id",
        (name, str(uuid.uuid4()), chat_key),
    ).fetchone()
    if created is not None:
        channel_id = created[0]
        _announce_joined(tx, channel_id, _insert_members(tx, channel_id, [low, high]), now)
    else:
        channel_id = tx.execute("SELECT id FROM mail_channel WHERE chat_key = %s", (chat_key,)).fetchone()[0]
        tx.execute("UPDATE mail_channel_partner SET is_pinned = true WHERE channel_id = %s AND partner_id = %s",
                   (channel_id, partner_id))
    return channel_infos(tx, [channel_id], partner_id, now)[0]


def create_group(tx: Transaction, partner_id: int, other_partner_ids: list[int], now: datetime) -> dict:
    """A private conversation between the caller and ``other_partner_ids``,
    always a new one (unlike a chat, two groups of the same people may
    coexist). It is named after its members, and every member's open
    clients are told at once, the creator's other tabs included."""
    member_ids = sorted({partner_id, *other_partner_ids})
    names = users.partner_names(tx, member_ids)
    unknown = set(member_ids) - set(names)
    if unknown:
        raise InvalidInput(f"unknown partners: {sorted(unknown)}")
    if len(member_ids) < 2:
        raise InvalidInput("a group needs at least one other partner")
    name = ", ".join(sorted(names.values()))
    if len(name) > MAX_NAME_LENGTH:
        name = name[: MAX_NAME_LENGTH - 1] + "…"
    channel_id = tx.execute(
        "INSERT INTO mail_channel (name, channel_type, public, uuid) VALUES (%s, 'group', 'private', %s) RETURNING id",
        (name, str(uuid.uuid4())),
    ).fetchone()[0]
    _announce_joined(tx, channel_id, _insert_members(tx, channel_id, member_ids), now)
    return channel_infos(tx, [channel_id], partner_id, now)[0]


def search_public(tx: Transaction, partner_id: int, now: datetime) -> list[dict]:
    """Every public channel, each flagged with whether the caller is a member."""
    ids = [row[0] for row in tx.execute(
        "SELECT id FROM mail_channel WHERE channel_type = 'channel' AND public = 'public' ORDER BY name, id"
    ).fetchall()]
    return channel_infos(tx, ids, partner_id, now)


def partner_channel_ids(tx: Transaction, partner_id: int) -> list[int]:
    rows = tx.execute(
        "SELECT channel_id FROM mail_channel_partner WHERE partner_id = %s AND is_pinned ORDER BY channel_id",
        (partner_id,),
    ).fetchall()
    return [row[0] for row in rows]


def channel_infos(tx: Transaction, channel_ids: list[int], partner_id: int, now: datetime) -> list[dict]:
    """What a client needs to show channels to ``partner_id``, in the order given.

    Two queries whatever the number of channels: one for the channels and the
    caller's membership (with unread counters), one for all members.
    """
    if not channel_ids:
        return []
    rows = tx.execute(
        f"SELECT {_CHANNEL_COLUMNS}, c.create_date, m.id IS NOT NULL, m.seen_message_id,"
        " m.fetched_message_id, m.is_pinned, m.last_interest_dt, last.id,"
        " CASE WHEN m.id IS NULL THEN 0 ELSE (SELECT count(*) FROM mail_message u"
        "  WHERE u.model = 'mail.channel' AND u.res_id = c.id AND u.id > COALESCE(m.seen_message_id, 0)) END"
        " FROM mail_channel c"
        " LEFT JOIN mail_channel_partner m ON m.channel_id = c.id AND m.partner_id = %s"
        " LEFT JOIN LATERAL (SELECT max(id) AS id FROM mail_message"
        "  WHERE model = 'mail.channel' AND res_id = c.id) AS last ON true"
        " WHERE c.id = ANY(%s)",
        (partner_id, list(channel_ids)),
    ).fetchall()
    member_rows = tx.execute(
        "SELECT m.channel_id, p.id, p.name, m.seen_message_id, m.fetched_message_id, pr.last_poll, pr.last_presence"
        " FROM mail_channel_partner m JOIN res_partner p ON p.id = m.partner_id"
        " LEFT JOIN bus_presence pr ON pr.partner_id = p.id"
        " WHERE m.channel_id = ANY(%s) ORDER BY p.name, p.id",
        (list(channel_ids),),
    ).fetchall()
    members: dict[int, list] = {}
    for channel_id, pid, name, seen, fetched, last_poll, last_presence in member_rows:
        members.setdefault(channel_id, []).append(
            (pid, name, seen, fetched, presence.im_status(last_poll, last_presence, now)))
    infos = {}
    for row in rows:
        channel = Channel(*row[:6])
        create_date, is_member, seen, fetched, pinned, last_interest, last_message, unread = row[6:]
        channel_members = members.get(channel.id, [])
        info = {
            "id": channel.id,
            "name": channel.name,
            "channel_type": channel.channel_type,
            "public": channel.public,
            "uuid": channel.uuid,
            "description": channel.description or False,
            "create_date": format_datetime(create_date),
            "is_member": is_member,
            "is_pinned": bool(pinned) if is_member else False,
            "last_interest_dt": format_datetime(last_interest) or False,
            "last_message_id": last_message or False,
            "seen_message_id": seen or False,
            "fetched_message_id": fetched or False,
            "message_unread_counter": unread,
            "member_count": len(channel_members),
            "members": [{"id": pid, "name": name, "im_status": status}
                        for pid, name, _, _, status in channel_members],
        }
        if channel.channel_type in ("chat", "group"):
            # Small conversations show who has read what ("seen by Marc").
            info["seen_partners_info"] = [
                {"partner_id": pid, "seen_message_id": s or False, "fetched_message_id": f or False}
                for pid, _, s, f, _ in channel_members
            ]
        infos[channel.id] = info
    return [infos[channel_id] for channel_id in channel_ids if channel_id in infos]


def set_last_seen(tx: Transaction, channel: Channel, partner_id: int, last_message_id: int) -> dict:
    """Move the caller's "seen up to" marker forward (never backwards) and
    say so as Odoo 15 does: in a chat to the channel, so the other side can
    show "seen"; elsewhere only to the caller's partner, since who read what
    in a channel is nobody else's business. Either way the caller's other
    tabs hear it and drop their unread counts."""
    row = tx.execute(
        "UPDATE mail_channel_partner m"
        " SET seen_message_id = target.id, fetched_message_id = GREATEST(m.fetched_message_id, target.id)"
        " FROM (SELECT max(id) AS id FROM mail_message"
        "  WHERE model = 'mail.channel' AND res_id = %(cid)s AND id <= %(mid)s) AS target"
        " WHERE m.channel_id = %(cid)s AND m.partner_id = %(pid)s AND target.id IS NOT NULL"
        " AND target.id > COALESCE(m.seen_message_id, 0)"
        " RETURNING m.seen_message_id",
        {"cid": channel.id, "pid": partner_id, "mid": last_message_id},
    ).fetchone()
    if row is None:
        seen = tx.execute(
            "SELECT seen_message_id FROM mail_channel_partner WHERE channel_id = %s AND partner_id = %s",
            (channel.id, partner_id),
        ).fetchone()[0]
        return {"channel_id": channel.id, "last_message_id": seen or False, "partner_id": partner_id}
    payload = {"channel_id": channel.id, "last_message_id": row[0], "partner_id": partner_id}
    target = ("mail.channel", channel.id) if channel.channel_type == "chat" else ("res.partner", partner_id)
    sendone(tx, target, SEEN_TYPE, payload)
    return payload


def notify_typing(tx: Transaction, channel: Channel, partner_id: int, partner_name: str, is_typing: bool) -> None:
    sendone(tx, ("mail.channel", channel.id), TYPING_TYPE, {
        "channel_id": channel.id,
        "is_typing": is_typing,
        "partner_id": partner_id,
        "partner_name": partner_name,
    })


_POLL_SUBJECTS = (
    "SELECT u.partner_id, m.channel_id, NULL::text FROM res_users u"
    " LEFT JOIN mail_channel_partner m ON m.partner_id = u.partner_id"
    " WHERE u.id = $1::integer AND u.session_version = $2::integer"
    " UNION ALL"
    " SELECT NULL, ch.id, ch.uuid FROM mail_channel ch"
    " WHERE ch.uuid = ANY($3::text[]) AND ch.channel_type = 'channel' AND ch.public = 'public'"
)


@dataclass(frozen=True)
class PollSubjects:
    """What a poll may listen to, as the database says it now."""

    #: The caller's partner; None if anonymous, unknown or logged out since
    #: the cookie was signed (or if no session was asked about).
    partner_id: Optional[int]
    #: The channels that partner belongs to.
    channel_ids: tuple[int, ...]
    #: Of the names asked about, the uuids of public channels, with their ids.
    public_channels: dict[str, int]


def poll_subjects(database: Database, session: Optional[Session], names: list[str]) -> PollSubjects:
    """The session's partner and channels, and which ``names`` are uuids of
    public channels, in one query (either part may be left out: no session,
    no names). Whoever turns this into what a poll hears leaves out the uuids
    of channels the caller belongs to, which it hears as members."""
    uid, version = (session.uid, session.version) if session is not None else (None, None)
    with database.cursor() as cr:
        # Prepared: planning it costs PostgreSQL about 0.2 ms, twice what
        # running it does.
        execute_prepared(cr, "imbus_poll_subjects", _POLL_SUBJECTS, (uid, version, list(names)))
        rows = cr.fetchall()
    partner_id = next((row[0] for row in rows if row[0] is not None), None)
    channel_ids = tuple(sorted(row[1] for row in rows if row[0] is not None and row[1] is not None))
    return PollSubjects(partner_id, channel_ids, {row[2]: row[1] for row in rows if row[2] is not None})
