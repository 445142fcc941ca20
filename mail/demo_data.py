"""The people and the channel a fresh demo starts with.

Run at every demo start-up (and by tests): whatever exists is left alone,
whatever is missing is created, so it is safe to run again and again, and
from two processes at once.
"""
from __future__ import annotations

from bus.database import Database

from . import channels, messages, presence, users

#: (login, password, name): the accounts the demo's login screen mentions.
DEMO_USERS = [
    ("admin", "admin", "Mitchell Admin"),
    ("demo", "demo", "Marc Demo"),
    ("jane", "jane", "Jane Peterson"),
    ("joel", "joel", "Joel Willis"),
]
#: People without a login, so a partner search finds more than the users.
DEMO_PARTNERS = ["Azure Interior", "Brandon Freeman", "Deco Addict"]
GENERAL_CHANNEL = "general"
GENERAL_DESCRIPTION = "General announcements for all employees."
WELCOME = "Welcome to #general! Say hello, and open a second browser to watch messages arrive live."

_DEMO_LOCK = 0x3A12


def install_demo_data(database: Database) -> None:
    """Create the demo users, partners and the ``general`` channel when missing."""
    with database.transaction() as tx:
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (_DEMO_LOCK,))
        demo_partner_ids = []
        for login, password, name in DEMO_USERS:
            user = users.get_user_by_login(tx, login) or users.create_user(tx, login, password, name)
            demo_partner_ids.append(user.partner_id)
        for name in users.missing_partner_names(tx, DEMO_PARTNERS):
            users.create_partner(tx, name)
        row = tx.execute(
            "SELECT id FROM mail_channel WHERE name = %s AND channel_type = 'channel' ORDER BY id LIMIT 1",
            (GENERAL_CHANNEL,),
        ).fetchone()
        if row is not None:
            return
        admin_partner_id = demo_partner_ids[0]
        channel_id = channels.create_channel(tx, admin_partner_id, GENERAL_CHANNEL, presence.utc_now(), "public",
                                            GENERAL_DESCRIPTION)
        channels.add_member_ids(tx, channel_id, demo_partner_ids)
        channel = channels.member_channel(tx, channel_id, admin_partner_id)
        messages.message_post(tx, channel, admin_partner_id, WELCOME)
