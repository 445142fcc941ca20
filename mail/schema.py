"""The chat tables, created idempotently next to the bus tables.

Names follow Odoo's (``res_partner``, ``mail_channel``...) so that anyone
who knows Odoo's Discuss finds their way, but only the columns the chat uses
exist.
"""
from __future__ import annotations

from bus.database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS imbus_config (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS res_partner (
    id serial PRIMARY KEY,
    name text NOT NULL,
    create_date timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE IF NOT EXISTS res_users (
    id serial PRIMARY KEY,
    login text NOT NULL UNIQUE,
    password text NOT NULL,
    partner_id integer NOT NULL UNIQUE REFERENCES res_partner (id) ON DELETE CASCADE,
    -- Signed into every session cookie and bumped on logout: a cookie
    -- carrying an older value is worth nothing, even a copied one.
    session_version integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mail_channel (
    id serial PRIMARY KEY,
    name text NOT NULL,
    channel_type text NOT NULL CHECK (channel_type IN ('channel', 'chat', 'group')),
    public text NOT NULL DEFAULT 'public' CHECK (public IN ('public', 'private')),
    uuid text NOT NULL UNIQUE,
    description text,
    -- "lowest partner id-highest partner id" for a chat, NULL otherwise: the
    -- unique constraint is what keeps two concurrent "start a chat" calls
    -- from creating two conversations between the same people.
    chat_key text UNIQUE,
    create_date timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE IF NOT EXISTS mail_channel_partner (
    id serial PRIMARY KEY,
    channel_id integer NOT NULL REFERENCES mail_channel (id) ON DELETE CASCADE,
    partner_id integer NOT NULL REFERENCES res_partner (id) ON DELETE CASCADE,
    seen_message_id integer,
    fetched_message_id integer,
    is_pinned boolean NOT NULL DEFAULT true,
    last_interest_dt timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (channel_id, partner_id)
);
CREATE INDEX IF NOT EXISTS mail_channel_partner_partner_idx ON mail_channel_partner (partner_id);
CREATE TABLE IF NOT EXISTS mail_message_subtype (
    id serial PRIMARY KEY,
    xmlid text NOT NULL UNIQUE,
    name text NOT NULL
);
INSERT INTO mail_message_subtype (xmlid, name)
    VALUES ('mail.mt_comment', 'Discussions'), ('mail.mt_note', 'Note')
    ON CONFLICT (xmlid) DO NOTHING;
CREATE TABLE IF NOT EXISTS mail_message (
    id serial PRIMARY KEY,
    model text,
    res_id integer,
    body text NOT NULL DEFAULT '',
    author_id integer REFERENCES res_partner (id) ON DELETE SET NULL,
    message_type text NOT NULL,
    subtype_id integer REFERENCES mail_message_subtype (id),
    partner_ids integer[] NOT NULL DEFAULT '{}',
    date timestamp without time zone NOT NULL DEFAULT date_trunc('second', now() AT TIME ZONE 'UTC'),
    parent_id integer REFERENCES mail_message (id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS mail_message_thread_idx ON mail_message (model, res_id, id);
-- Odoo's name; only the columns the chat uses. res_model/res_id is the
-- channel, also while pending (message_id NULL): a pending file may only be
-- posted where it was uploaded.
CREATE TABLE IF NOT EXISTS ir_attachment (
    id serial PRIMARY KEY,
    name text NOT NULL,
    mimetype text NOT NULL,
    checksum text NOT NULL,
    file_size integer NOT NULL,
    -- Exactly one of them: the bytes in the row, or a file of the storage folder.
    db_datas bytea,
    store_fname text,
    res_model text NOT NULL,
    res_id integer NOT NULL,
    create_partner_id integer REFERENCES res_partner (id) ON DELETE CASCADE,
    message_id integer REFERENCES mail_message (id) ON DELETE CASCADE,
    create_date timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS ir_attachment_message_idx ON ir_attachment (message_id);
-- A stored file is removed once no row names it: that lookup.
CREATE INDEX IF NOT EXISTS ir_attachment_store_fname_idx ON ir_attachment (store_fname) WHERE store_fname IS NOT NULL;
CREATE TABLE IF NOT EXISTS mail_message_reaction (
    id serial PRIMARY KEY,
    message_id integer NOT NULL REFERENCES mail_message (id) ON DELETE CASCADE,
    partner_id integer NOT NULL REFERENCES res_partner (id) ON DELETE CASCADE,
    content text NOT NULL,
    UNIQUE (message_id, partner_id, content)
);
CREATE TABLE IF NOT EXISTS bus_presence (
    id serial PRIMARY KEY,
    partner_id integer NOT NULL UNIQUE REFERENCES res_partner (id) ON DELETE CASCADE,
    last_poll timestamp without time zone NOT NULL,
    last_presence timestamp without time zone NOT NULL,
    -- The status last announced to the partner's channels. Whoever changes
    -- it (a poll, or the sweep of any process) pushes the change, so each
    -- change is pushed exactly once.
    pushed_status text NOT NULL DEFAULT 'offline' CHECK (pushed_status IN ('online', 'away', 'offline'))
);
-- Columns added after the first release. ALTER TABLE locks the table
-- exclusively even when the column exists, so it only runs when missing: a
-- process starting next to busy ones must not stall their polls.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'res_users'::regclass
                   AND attname = 'session_version' AND NOT attisdropped) THEN
        ALTER TABLE res_users ADD COLUMN session_version integer NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'bus_presence'::regclass
                   AND attname = 'pushed_status' AND NOT attisdropped) THEN
        ALTER TABLE bus_presence ADD COLUMN pushed_status text NOT NULL DEFAULT 'offline'
            CHECK (pushed_status IN ('online', 'away', 'offline'));
    END IF;
END $$;
"""

# Not the bus's lock id: both schemas install one after the other at start-up.
_SCHEMA_LOCK = 0x3A11


def install(database: Database) -> None:
    """Create what is missing; existing tables and rows are left alone."""
    with database.transaction() as tx:
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        tx.execute(SCHEMA)
