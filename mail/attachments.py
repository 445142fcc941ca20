"""Files shared in a conversation, stored as Odoo's ``ir.attachment``.

An upload is *pending*: it belongs to its uploader and to one channel, and
no one else can see it, until a post of that uploader on that channel takes
it (``message_id`` set). From then on every member of the channel may read
it. The bytes live in PostgreSQL (``db_datas``) or, with a storage folder,
in a file named by its SHA-1, as Odoo's filestore does: never by the name the
user gave, which is only shown and sent back as the download name.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

from bus.database import Database, Transaction
from bus.models import sendmany

from .channels import Channel
from .errors import InvalidInput, NotFound

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
#: The advisory lock class (two-key form, the second key the file's name)
#: under which one stored file is written or removed: uploads of the same
#: bytes share a file, so removing it must wait for, and then see, them.
FILE_LOCK = 0x3A12
DELETE_TYPE = "ir.attachment/delete"
#: Shown inline (``/web/image``, ``/web/content``): formats browsers decode as
#: pictures only. SVG is not among them: it can carry script.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FALLBACK_TYPE = "application/octet-stream"
_MIMETYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
MAX_NAME = 255
#: Uploads one person may have waiting to be posted, and how long one waits
#: before the person's next upload removes it: an upload never posted would
#: otherwise stay for ever.
MAX_PENDING = 50
PENDING_LIFETIME_HOURS = 24


@dataclass(frozen=True)
class Attachment:
    id: int
    name: str
    mimetype: str
    checksum: str
    file_size: int
    store_fname: Optional[str]

    @property
    def inline_image(self) -> bool:
        return self.mimetype in INLINE_IMAGE_TYPES


class Storage:
    """Where the bytes go: the row itself unless a folder is given."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        self.folder = Path(folder).resolve() if folder else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def name(self, checksum: str) -> Optional[str]:
        """The file that holds content of ``checksum`` (None: kept in the row)."""
        return None if self.folder is None else f"{checksum[:2]}/{checksum}"

    def put(self, data: bytes, fname: str) -> None:
        """Store ``data`` as ``fname`` unless it is there: same content, same
        file. Written to a temporary name first, so a reader never sees half
        a file."""
        assert self.folder is not None
        path = self.folder / fname
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
                out.write(data)
            os.replace(out.name, path)

    def get(self, fname: str) -> bytes:
        try:
            if self.folder is None:
                raise FileNotFoundError(fname)
            return (self.folder / fname).read_bytes()
        except FileNotFoundError:
            # Configured without its folder, or the file was removed by hand.
            raise NotFound("the attachment's file is not available") from None

    def discard(self, fname: str) -> None:
        if self.folder is not None:
            (self.folder / fname).unlink(missing_ok=True)


def clean_name(name: str) -> str:
    """The name shown and offered on download: the last path segment, without
    control characters, since browsers send ``C:\\...`` paths and anyone can
    send anything."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:MAX_NAME] if name.strip(".") else "file"


def clean_mimetype(mimetype: Optional[str]) -> str:
    """The content type as sent, if it is one; it goes into a header."""
    value = (mimetype or "").split(";", 1)[0].strip().lower()
    return value if _MIMETYPE.fullmatch(value) else FALLBACK_TYPE


def read_limited(stream: IO[bytes], max_size: int) -> bytes:
    """The whole file, or an error once it is past ``max_size`` (read at most
    one byte further)."""
    data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise TooLarge(max_size)
    return data


class TooLarge(InvalidInput):
    def __init__(self, max_size: int) -> None:
        super().__init__(f"the file is over the {max_size} bytes an attachment may have")


def create_pending(tx: Transaction, storage: Storage, channel: Channel, uploader_id: int, name: str,
                   mimetype: Optional[str], data: bytes) -> dict:
    """A new attachment of ``channel``, pending for its uploader. Returns
    what Odoo's upload route answers."""
    _drop_stale_pending(tx, storage, uploader_id)
    waiting = tx.execute("SELECT count(*) FROM ir_attachment WHERE create_partner_id = %s AND message_id IS NULL",
                         (uploader_id,)).fetchone()[0]
    if waiting >= MAX_PENDING:
        raise InvalidInput(f"{MAX_PENDING} files are waiting to be posted already: post or remove some first")
    checksum = hashlib.sha1(data).hexdigest()
    fname = storage.name(checksum)
    if fname is not None:
        _lock_file(tx, fname)  # held to COMMIT: a removal of the file waits, then sees this row
        storage.put(data, fname)
    row = tx.execute(
        "INSERT INTO ir_attachment (name, mimetype, checksum, file_size, store_fname, db_datas,"
        " res_model, res_id, create_partner_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'mail.channel', %s, %s) RETURNING id",
        (clean_name(name), clean_mimetype(mimetype), checksum, len(data), fname,
         None if fname else data, channel.id, uploader_id),
    ).fetchone()
    attachment = _get(tx, row[0])
    assert attachment is not None
    return {"id": attachment.id, "filename": attachment.name, "name": attachment.name,
            "mimetype": attachment.mimetype, "size": attachment.file_size, "checksum": attachment.checksum}


def _drop_stale_pending(tx: Transaction, storage: Storage, uploader_id: int) -> None:
    rows = tx.execute(
        "DELETE FROM ir_attachment WHERE create_partner_id = %s AND message_id IS NULL"
        " AND create_date < (now() AT TIME ZONE 'UTC') - make_interval(hours => %s) RETURNING store_fname",
        (uploader_id, PENDING_LIFETIME_HOURS)).fetchall()
    remove_files_after_commit(tx, storage, [row[0] for row in rows if row[0]])


def check_pending(tx: Transaction, attachment_ids: list[int], channel: Channel, author_id: int) -> None:
    """Refuse a post that names attachments other than the author's own
    pending uploads to this channel."""
    ids = sorted(set(attachment_ids))
    if not ids:
        return
    rows = tx.execute(
        "SELECT id FROM ir_attachment WHERE id = ANY(%s) AND message_id IS NULL AND res_model = 'mail.channel'"
        " AND res_id = %s AND create_partner_id = %s FOR UPDATE",
        (ids, channel.id, author_id),
    ).fetchall()
    missing = set(ids) - {row[0] for row in rows}
    if missing:
        raise InvalidInput(f"attachments {sorted(missing)} are not files you uploaded to this conversation"
                           " and have not posted yet")


def attach(tx: Transaction, attachment_ids: list[int], message_id: int) -> None:
    """Give checked pending attachments to the message just posted."""
    if attachment_ids:
        tx.execute("UPDATE ir_attachment SET message_id = %s WHERE id = ANY(%s)",
                   (message_id, sorted(set(attachment_ids))))


def message_attachments(tx: Transaction, message_ids: list[int]) -> dict[int, list[dict]]:
    """Each message's attachments in Odoo 15's ``_attachment_format`` shape."""
    formatted: dict[int, list[dict]] = {}
    rows = tx.execute(
        "SELECT message_id, id, name, mimetype, checksum, file_size, res_model, res_id FROM ir_attachment"
        " WHERE message_id = ANY(%s) ORDER BY id", (list(message_ids),),
    ).fetchall()
    for message_id, aid, name, mimetype, checksum, size, res_model, res_id in rows:
        formatted.setdefault(message_id, []).append({
            "id": aid, "name": name, "filename": name, "mimetype": mimetype, "checksum": checksum,
            "file_size": size, "res_model": res_model, "res_id": res_id, "is_main": False,
            "originThread": [["insert", {"id": res_id, "model": res_model}]],
        })
    return formatted


def readable(tx: Transaction, attachment_id: int, partner_id: int) -> Attachment:
    """An attachment the partner may download: posted on a channel it is a
    member of, or its own pending upload. Anything else is not found."""
    row = tx.execute(
        "SELECT a.id FROM ir_attachment a"
        " JOIN mail_channel_partner m ON m.channel_id = a.res_id AND m.partner_id = %s"
        " WHERE a.id = %s AND a.res_model = 'mail.channel'"
        " AND (a.message_id IS NOT NULL OR a.create_partner_id = %s)",
        (partner_id, attachment_id, partner_id),
    ).fetchone()
    attachment = _get(tx, row[0]) if row else None
    if attachment is None:
        raise NotFound("no such attachment")
    return attachment


def content(tx: Transaction, storage: Storage, attachment: Attachment) -> bytes:
    if attachment.store_fname:
        return storage.get(attachment.store_fname)
    row = tx.execute("SELECT db_datas FROM ir_attachment WHERE id = %s", (attachment.id,)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def delete_pending(tx: Transaction, storage: Storage, attachment_id: int, partner_id: int) -> None:
    """Remove the caller's own pending upload, and tell the caller's other
    tabs (Odoo's ``ir.attachment/delete``). A posted one stays."""
    row = tx.execute(
        "DELETE FROM ir_attachment WHERE id = %s AND message_id IS NULL AND create_partner_id = %s"
        " RETURNING store_fname", (attachment_id, partner_id),
    ).fetchone()
    if row is None:
        raise NotFound("no such pending attachment of yours")
    remove_files_after_commit(tx, storage, [row[0]] if row[0] else [])
    sendmany(tx, [(("res.partner", partner_id), DELETE_TYPE, {"id": attachment_id})])


def message_files(tx: Transaction, message_id: int) -> list[str]:
    """The stored files of a message's attachments, read before it is deleted
    (its attachments go with it)."""
    rows = tx.execute("SELECT store_fname FROM ir_attachment WHERE message_id = %s AND store_fname IS NOT NULL",
                      (message_id,)).fetchall()
    return [row[0] for row in rows]


def remove_files_after_commit(tx: Transaction, storage: Storage, fnames: list[str]) -> None:
    """Once ``tx`` has committed the deletion of rows that held ``fnames``,
    remove each file no row refers to any more. Never before COMMIT: a
    rollback would keep a row whose file is gone."""
    if fnames:
        tx.on_postcommit(lambda: _remove_unreferenced(tx.database, storage, sorted(set(fnames))))


def _remove_unreferenced(database: Database, storage: Storage, fnames: list[str]) -> None:
    for fname in fnames:
        with database.transaction() as tx:
            # An upload of the same bytes holds the lock until it commits:
            # its row is then seen here, or it writes the file anew after.
            _lock_file(tx, fname)
            if tx.execute("SELECT 1 FROM ir_attachment WHERE store_fname = %s LIMIT 1", (fname,)).fetchone() is None:
                storage.discard(fname)


def _lock_file(tx: Transaction, fname: str) -> None:
    tx.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FILE_LOCK, fname))


def _get(tx: Transaction, attachment_id: int) -> Optional[Attachment]:
    row = tx.execute("SELECT id, name, mimetype, checksum, file_size, store_fname FROM ir_attachment WHERE id = %s",
                     (attachment_id,)).fetchone()
    return Attachment(*row) if row else None
