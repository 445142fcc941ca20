"""Who is online: every poll refreshes the caller's presence row, and a
status is derived from how recent that row is.

The rules are Odoo's: a partner who has not polled for 55 s is ``offline``
(a client polls at least every 50 s), one whose user has not touched the
page for 30 min is ``away``, otherwise ``online``. Time always comes in as
a ``now`` argument so that tests check the timers without sleeping.

Status changes caused by a poll (offline → online, away → online...) and by
a logout are pushed as ``bus/im_status`` ``{"id", "partner_id", "im_status"}``
on every channel the partner belongs to. Going offline by silence is not
pushed (nothing runs when nobody polls); clients ask ``/longpolling/im_status``
for that, as Odoo 15's do.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Optional

from bus.database import Database, Transaction
from bus.models import sendmany

DISCONNECTION_TIMER = timedelta(seconds=55)
AWAY_TIMER = timedelta(minutes=30)
#: A presence row younger than this is not rewritten: a client polling in a
#: tight loop (or many tabs) would otherwise write on every poll.
UPDATE_INTERVAL = timedelta(seconds=5)

MAX_INACTIVITY = timedelta(days=1)

IM_STATUS_TYPE = "bus/im_status"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current UTC time as a naive datetime, as the tables store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def im_status(last_poll: Optional[datetime], last_presence: Optional[datetime], now: datetime) -> str:
    if last_poll is None or now - last_poll > DISCONNECTION_TIMER:
        return "offline"
    if last_presence is None or now - last_presence > AWAY_TIMER:
        return "away"
    return "online"


def statuses(tx: Transaction, partner_ids: Iterable[int], now: datetime) -> dict[int, str]:
    """The status of each partner (``offline`` for those who never polled)."""
    ids = list(partner_ids)
    rows = tx.execute(
        "SELECT partner_id, last_poll, last_presence FROM bus_presence WHERE partner_id = ANY(%s)", (ids,)
    ).fetchall()
    found = {partner_id: im_status(last_poll, last_presence, now) for partner_id, last_poll, last_presence in rows}
    return {partner_id: found.get(partner_id, "offline") for partner_id in ids}


def update(database: Database, partner_id: int, inactivity_ms: float, now: datetime) -> Optional[str]:
    """Record a poll; return the new status when it changed (and was pushed).

    One short transaction of its own, so a poll never holds a row lock while
    it waits. ``INSERT ... ON CONFLICT DO UPDATE`` cannot fail on a concurrent
    poll of the same partner (it waits for the other writer instead), and the
    ``WHERE`` skips rows refreshed less than :data:`UPDATE_INTERVAL` ago
    unless the user became active again. Several tabs report different
    inactivity; the most recent activity wins.
    """
    # Beyond a day the exact figure changes no status; capping it keeps the
    # datetime arithmetic in range whatever a client reports.
    max_ms = MAX_INACTIVITY / timedelta(milliseconds=1)
    last_presence = now - timedelta(milliseconds=min(max(inactivity_ms, 0), max_ms))
    with database.transaction() as tx:
        row = tx.execute(
            "WITH previous AS (SELECT last_poll, last_presence FROM bus_presence WHERE partner_id = %(pid)s)"
            " INSERT INTO bus_presence AS p (partner_id, last_poll, last_presence)"
            " VALUES (%(pid)s, %(now)s, %(presence)s)"
            " ON CONFLICT (partner_id) DO UPDATE SET last_poll = EXCLUDED.last_poll,"
            "  last_presence = GREATEST(EXCLUDED.last_presence, p.last_presence)"
            " WHERE p.last_poll < %(now)s - %(interval)s OR p.last_presence < EXCLUDED.last_presence - %(interval)s"
            " RETURNING (SELECT last_poll FROM previous), (SELECT last_presence FROM previous),"
            "  p.last_poll, p.last_presence",
            {"pid": partner_id, "now": now, "presence": last_presence, "interval": UPDATE_INTERVAL},
        ).fetchone()
        if row is None:
            return None
        before = im_status(row[0], row[1], now)
        after = im_status(row[2], row[3], now)
        if before == after:
            return None
        push_status(tx, partner_id, after)
        return after


def disconnect(tx: Transaction, partner_id: int) -> None:
    """Mark a partner offline at once (logout) and tell their channels."""
    deleted = tx.execute("DELETE FROM bus_presence WHERE partner_id = %s RETURNING id", (partner_id,)).fetchone()
    if deleted:
        push_status(tx, partner_id, "offline")


def push_status(tx: Transaction, partner_id: int, status: str) -> None:
    rows = tx.execute("SELECT channel_id FROM mail_channel_partner WHERE partner_id = %s", (partner_id,)).fetchall()
    payload = {"id": partner_id, "partner_id": partner_id, "im_status": status}
    # The partner's own clients listen to these channels too; their partner
    # channel is only needed when they belong to none (one copy per poller).
    targets = [("mail.channel", channel_id) for (channel_id,) in rows] or [("res.partner", partner_id)]
    sendmany(tx, [(target, IM_STATUS_TYPE, payload) for target in targets])
