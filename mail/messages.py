"""Posting and reading messages: the post path of the chat.

``message_post`` writes the message and, through ``_notify_thread``, queues
its bus notifications in the *same* transaction: the bus rows are inserted
by a pre-commit hook and NOTIFY runs after COMMIT, so a listener never hears
about a message that is not there, and a rolled-back post announces nothing.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional, Union

from bus.database import Transaction
from bus.models import sendmany

from . import attachments, users
from .channels import Channel, audience_targets, format_datetime, member_channel
from .errors import Forbidden, InvalidInput, NotFound
from .message_body import DEFAULT_MAX_BODY_BYTES, EmptyBody, preview, sanitize_body

NEW_MESSAGE_TYPE = "mail.channel/new_message"
#: Odoo's "these fields of the message changed" and "these messages are gone".
MESSAGE_UPDATE_TYPE = "mail.message/insert"
MESSAGE_DELETE_TYPE = "mail.message/delete"
LAST_INTEREST_TYPE = "mail.channel/last_interest_dt_changed"

#: What a user may post. Notifications and emails are written by the server.
POSTABLE_TYPES = ("comment",)
DEFAULT_SUBTYPE = "mail.mt_comment"
MAX_FETCH = 100


def message_post(
    tx: Transaction,
    channel: Channel,
    author_id: int,
    body: str,
    *,
    message_type: str = "comment",
    subtype_xmlid: str = DEFAULT_SUBTYPE,
    partner_ids: Optional[list[int]] = None,
    parent_id: Optional[int] = None,
    attachment_ids: Optional[list[int]] = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    plain_text: bool = False,
) -> dict:
    """Post on a channel the author belongs to; return the formatted message.

    Everything is validated before the first write, so a refused post leaves
    no trace. ``parent_id`` counts only if it is a message of this channel.
    A post with attachments may have an empty body, as in Odoo.
    """
    attachment_ids = sorted(set(attachment_ids or []))
    if message_type not in POSTABLE_TYPES:
        raise InvalidInput(f"message_type must be one of {list(POSTABLE_TYPES)}")
    recipients = sorted(set(partner_ids or []))
    names = users.partner_names(tx, recipients) if recipients else {}
    unknown = set(recipients) - set(names)
    if unknown:
        raise InvalidInput(f"unknown partners: {sorted(unknown)}")
    attachments.check_pending(tx, attachment_ids, channel, author_id)
    clean = (sanitize_body(body, max_body_bytes, mentions=names, plain_text=plain_text)
             if body.strip() or not attachment_ids else "")
    # A parent that is not a message of this channel is dropped, not refused,
    # as Odoo does: the reply is posted, just not as a reply. The subtype is
    # looked up by the INSERT itself (one round trip less on every post): an
    # unknown one inserts nothing.
    inserted = tx.execute(
        "INSERT INTO mail_message (model, res_id, body, author_id, message_type, subtype_id, partner_ids, parent_id)"
        " SELECT 'mail.channel', %(cid)s, %(body)s, %(author)s, %(type)s, s.id, %(recipients)s,"
        "  (SELECT id FROM mail_message WHERE id = %(parent)s AND model = 'mail.channel' AND res_id = %(cid)s)"
        " FROM mail_message_subtype s WHERE s.xmlid = %(subtype)s"
        " RETURNING id, date",
        {"cid": channel.id, "body": clean, "author": author_id, "type": message_type, "subtype": subtype_xmlid,
         "recipients": recipients, "parent": parent_id},
    ).fetchone()
    if inserted is None:
        raise InvalidInput(f"unknown subtype {subtype_xmlid!r}")
    message_id, date = inserted
    attachments.attach(tx, attachment_ids, message_id)
    member_ids = _mark_interest(tx, channel, author_id, message_id, date)
    # Just posted: no reactions yet, and files only if some were given.
    formatted = message_format(tx, [message_id], reactions=False, files=bool(attachment_ids))[0]
    _notify_thread(tx, channel, formatted, member_ids, format_datetime(date) or "")
    return formatted


def _mark_interest(tx: Transaction, channel: Channel, author_id: int, message_id: int,
                   date: datetime) -> list[int]:
    """The author has seen their own message; in chats and groups every member
    gets the conversation pinned and moved up. Returns those members (for a
    public channel, only the author, so a post does not rewrite a row per
    member of a big channel)."""
    only_author = "" if channel.channel_type in ("chat", "group") else " AND partner_id = %(author)s"
    rows = tx.execute(
        "UPDATE mail_channel_partner SET last_interest_dt = %(date)s, is_pinned = true,"
        " seen_message_id = CASE WHEN partner_id = %(author)s"
        "  THEN GREATEST(seen_message_id, %(mid)s) ELSE seen_message_id END,"
        " fetched_message_id = CASE WHEN partner_id = %(author)s"
        "  THEN GREATEST(fetched_message_id, %(mid)s) ELSE fetched_message_id END"
        " WHERE channel_id = %(cid)s" + only_author + " RETURNING partner_id",
        {"date": date, "author": author_id, "mid": message_id, "cid": channel.id},
    ).fetchall()
    return sorted(row[0] for row in rows)


def _notify_thread(tx: Transaction, channel: Channel, message: dict, member_ids: list[int],
                   last_interest_dt: str) -> None:
    """Queue who hears about a new message: the channel's members, listeners of
    a public channel's uuid, and, for chats and groups, each member's own
    channel (their conversation list reorders on it)."""
    payload = {"id": channel.id, "message": message}
    notifications = [(target, NEW_MESSAGE_TYPE, payload) for target in audience_targets(channel)]
    if channel.channel_type in ("chat", "group"):
        interest = {"id": channel.id, "last_interest_dt": last_interest_dt}
        notifications.extend((("res.partner", pid), LAST_INTEREST_TYPE, interest) for pid in member_ids)
    sendmany(tx, notifications)


def channel_message(tx: Transaction, message_id: int, partner_id: int) -> tuple[Channel, int]:
    """The channel of a message and the message's author, if ``partner_id``
    belongs to that channel; :class:`NotFound` otherwise, so a stranger
    cannot tell a message they may not see from one that does not exist."""
    row = tx.execute(
        "SELECT res_id, author_id FROM mail_message WHERE id = %s AND model = 'mail.channel'", (message_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"message {message_id} not found")
    try:
        channel = member_channel(tx, row[0], partner_id)
    except NotFound:
        raise NotFound(f"message {message_id} not found") from None
    return channel, row[1]


def notify_channel(tx: Transaction, channel: Channel, notification_type: str, payload: dict) -> None:
    """Tell whoever follows the channel's messages: its members and, for a
    public channel, those listening to its uuid."""
    sendmany(tx, [(target, notification_type, payload) for target in audience_targets(channel)])


def update_content(tx: Transaction, storage: attachments.Storage, message_id: int, partner_id: int, body: str,
                   max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, plain_text: bool = False) -> dict:
    """Edit a message its author wrote; an empty body deletes it, as
    Odoo 15's client deletes by sending an empty body. Returns the payload
    that was notified (``mail.message/insert`` or ``mail.message/delete``).

    Mentions stay those of the post: an edit can re-render ``@Name`` for a
    partner the message already notified, not reach new people.
    """
    channel, author_id = channel_message(tx, message_id, partner_id)
    if author_id != partner_id:
        raise Forbidden("only the author of a message can change it")
    clean = ""
    if body.strip():
        recipients = tx.execute("SELECT partner_ids FROM mail_message WHERE id = %s", (message_id,)).fetchone()[0]
        mentions = users.partner_names(tx, recipients) if recipients else {}
        try:
            clean = sanitize_body(body, max_body_bytes, mentions=mentions, plain_text=plain_text)
        except EmptyBody:
            clean = ""  # markup that shows nothing (Odoo's editor sends "<p><br></p>")
    if not clean:
        files = attachments.message_files(tx, message_id)
        tx.execute("DELETE FROM mail_message WHERE id = %s", (message_id,))  # its attachments and reactions too
        attachments.remove_files_after_commit(tx, storage, files)
        payload: dict = {"message_ids": [message_id]}
        notify_channel(tx, channel, MESSAGE_DELETE_TYPE, payload)
        return payload
    tx.execute("UPDATE mail_message SET body = %s WHERE id = %s", (clean, message_id))
    payload = {"id": message_id, "body": clean}
    notify_channel(tx, channel, MESSAGE_UPDATE_TYPE, payload)
    return payload


def message_format(tx: Transaction, message_ids: list[int], *, reactions: bool = True,
                   files: bool = True) -> list[dict]:
    """Messages as the web client reads them (Odoo 15's ``message_format``
    shapes: many2one fields as ``[id, name]`` or ``false``), newest first.
    ``reactions`` and ``files`` False skip a query each, for a message known
    to have none (the post path)."""
    rows = tx.execute(
        "SELECT m.id, m.body, m.date, m.author_id, a.name, m.model, m.res_id, m.message_type,"
        " m.subtype_id, s.name, s.xmlid, c.name, m.parent_id, pa.name, pm.body,"
        " (SELECT COALESCE(json_agg(json_build_object('id', r.id, 'name', r.name) ORDER BY r.id), '[]')"
        "  FROM res_partner r WHERE r.id = ANY(m.partner_ids))"
        " FROM mail_message m"
        " LEFT JOIN res_partner a ON a.id = m.author_id"
        " LEFT JOIN mail_message_subtype s ON s.id = m.subtype_id"
        " LEFT JOIN mail_channel c ON m.model = 'mail.channel' AND c.id = m.res_id"
        " LEFT JOIN mail_message pm ON pm.id = m.parent_id"
        " LEFT JOIN res_partner pa ON pa.id = pm.author_id"
        " WHERE m.id = ANY(%s) ORDER BY m.id DESC",
        (list(message_ids),),
    ).fetchall()
    ids = [row[0] for row in rows]
    attached = attachments.message_attachments(tx, ids) if files else {}
    groups = reaction_groups(tx, ids) if reactions else {}
    formatted = []
    for (mid, body, date, author_id, author_name, model, res_id, message_type, subtype_id, subtype_name,
         subtype_xmlid, record_name, parent_id, parent_author, parent_body, recipients) in rows:
        parent: Union[bool, list] = False
        if parent_id is not None:
            parent_text = preview(parent_body or "")
            parent = [parent_id, f"{parent_author}: {parent_text}" if parent_author else parent_text]
        formatted.append({
            "id": mid,
            "body": body,
            "date": format_datetime(date),
            "author_id": [author_id, author_name] if author_id is not None else False,
            "email_from": False,
            "message_type": message_type,
            "subtype_id": [subtype_id, subtype_name] if subtype_id is not None else False,
            "subject": False,
            "model": model,
            "res_id": res_id,
            "record_name": record_name or False,
            "partner_ids": [r["id"] for r in recipients],
            "recipients": recipients,
            "attachment_ids": attached.get(mid, []),
            "parent_id": parent,
            "is_discussion": subtype_xmlid == "mail.mt_comment",
            "is_note": subtype_xmlid == "mail.mt_note",
            "messageReactionGroups": groups.get(mid, []),
        })
    return formatted


def reaction_groups(tx: Transaction, message_ids: list[int]) -> dict[int, list[dict]]:
    """Each message's reactions grouped by emoji, in Odoo 15's
    ``messageReactionGroups`` shape, the first emoji used first."""
    rows = tx.execute(
        "SELECT r.message_id, r.content, json_agg(json_build_object('id', p.id, 'name', p.name) ORDER BY r.id)"
        " FROM mail_message_reaction r JOIN res_partner p ON p.id = r.partner_id"
        " WHERE r.message_id = ANY(%s) GROUP BY r.message_id, r.content ORDER BY r.message_id, min(r.id)",
        (list(message_ids),),
    ).fetchall()
    groups: dict[int, list[dict]] = {}
    for message_id, content, partners in rows:
        groups.setdefault(message_id, []).append({
            "content": content, "count": len(partners), "guests": [], "message": {"id": message_id},
            "partners": partners,
        })
    return groups


def channel_messages(tx: Transaction, channel: Channel, *, max_id: Optional[int] = None,
                     min_id: Optional[int] = None, limit: int = 30) -> list[dict]:
    """A page of a channel's history, newest first: ``max_id`` pages back,
    ``min_id`` fetches what came after a known message."""
    limit = max(1, min(limit, MAX_FETCH))
    query = "SELECT id FROM mail_message WHERE model = 'mail.channel' AND res_id = %s"
    params: list = [channel.id]
    if max_id is not None:
        query += " AND id < %s"
        params.append(max_id)
    if min_id is not None:
        query += " AND id > %s"
        params.append(min_id)
    ids = [row[0] for row in tx.execute(query + " ORDER BY id DESC LIMIT %s", (*params, limit)).fetchall()]
    return message_format(tx, ids) if ids else []
