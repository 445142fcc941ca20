"""Emoji reactions on messages: one per partner, message and emoji.

Only members of a message's channel react, and every change is announced to
the channel as Odoo 15 does, with ``mail.message/insert``. The payload holds
all of the message's reaction groups rather than Odoo's insert/unlink
commands for the one that changed, so a client replaces what it shows
instead of patching it, and a missed notification heals with the next.
"""
from __future__ import annotations

from bus.database import Transaction

from .channels import Channel
from .errors import InvalidInput
from .messages import MESSAGE_UPDATE_TYPE, channel_message, notify_channel, reaction_groups

#: An emoji with its modifiers and joiners fits; a sentence does not.
MAX_CONTENT_LENGTH = 16
#: Distinct reactions one partner may leave on one message (Slack allows 23):
#: every change sends all of a message's groups to the whole channel.
MAX_PER_PARTNER = 20


def _check_content(content: str) -> str:
    if not content.strip() or len(content) > MAX_CONTENT_LENGTH or any(c.isspace() for c in content):
        raise InvalidInput(f"a reaction is one emoji (at most {MAX_CONTENT_LENGTH} characters, no spaces)")
    return content


def add_reaction(tx: Transaction, message_id: int, partner_id: int, content: str) -> dict:
    """React; reacting twice with the same emoji changes nothing (and
    notifies nothing). Returns the message's reaction groups."""
    _check_content(content)
    channel, _ = channel_message(tx, message_id, partner_id)
    mine = tx.execute("SELECT count(*) FROM mail_message_reaction WHERE message_id = %s AND partner_id = %s"
                      " AND content <> %s", (message_id, partner_id, content)).fetchone()[0]
    if mine >= MAX_PER_PARTNER:
        raise InvalidInput(f"a message takes at most {MAX_PER_PARTNER} different reactions from one person")
    added = tx.execute(
        "INSERT INTO mail_message_reaction (message_id, partner_id, content) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (message_id, partner_id, content),
    ).fetchone()
    return _announce(tx, channel, message_id, changed=added is not None)


def remove_reaction(tx: Transaction, message_id: int, partner_id: int, content: str) -> dict:
    """Take one's own reaction back; removing one that is not there is not
    an error (two tabs may both toggle it off)."""
    _check_content(content)
    channel, _ = channel_message(tx, message_id, partner_id)
    removed = tx.execute(
        "DELETE FROM mail_message_reaction WHERE message_id = %s AND partner_id = %s AND content = %s RETURNING id",
        (message_id, partner_id, content),
    ).fetchone()
    return _announce(tx, channel, message_id, changed=removed is not None)


def _announce(tx: Transaction, channel: Channel, message_id: int, *, changed: bool) -> dict:
    payload = {"id": message_id, "messageReactionGroups": reaction_groups(tx, [message_id]).get(message_id, [])}
    if changed:
        notify_channel(tx, channel, MESSAGE_UPDATE_TYPE, payload)
    return payload
