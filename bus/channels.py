"""Channel names and notification encoding: pure helpers, no I/O.

A channel travels as compact JSON text, qualified by the database name the way
Odoo 15 does it, so that several databases can share one PostgreSQL server
(and one NOTIFY channel) without hearing each other:

* a string target ``"general"`` becomes ``["db", "general"]``;
* a record target ``("res.partner", 7)`` becomes ``["db", "res.partner", 7]``.

The compact JSON text is also the in-memory key, so a channel read back from
the database compares equal to one built here without re-parsing.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple, Union

#: The PostgreSQL channel every process LISTENs on.
NOTIFY_CHANNEL = "imbus"

#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well below.
NOTIFY_PAYLOAD_LIMIT = 7900

#: Every poller hears this string channel without asking for it.
BROADCAST = "broadcast"

#: Notification type a poller receives first when rows it may have wanted were
#: already garbage-collected.
OUTDATED_TYPE = "bus/outdated"

Target = Union[str, Tuple[str, int]]

#: A stored row as the dispatcher sees it: (id, channel key, message JSON text).
Row = Tuple[int, str, str]


#: One encoder for the process: ``json.dumps`` with options builds a new one
#: per call, which every post pays.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """JSON as Odoo writes it on the bus: compact, no spaces, UTF-8 kept."""
    return _ENCODER.encode(value)


@lru_cache(maxsize=65536)
def channel_with_db(dbname: str, target: Target) -> str:
    """Qualify ``target`` with the database name and return its key.

    Cached: every poll qualifies the same few channels again.

    Only strings and ``(model, id)`` pairs are channels; anything else is a
    programming error, refused here rather than stored as an unreachable row.
    """
    if isinstance(target, str):
        return dumps([dbname, target])
    if (
        isinstance(target, (tuple, list))
        and len(target) == 2
        and isinstance(target[0], str)
        and isinstance(target[1], int)
        and not isinstance(target[1], bool)
    ):
        return dumps([dbname, target[0], target[1]])
    raise TypeError(f"a bus target is a string or a (model, id) pair, not {target!r}")


def encode_message(notification_type: str, payload: Any) -> str:
    """The ``message`` column: ``{"type": ..., "payload": ...}``."""
    return dumps({"type": notification_type, "payload": payload})


def split_notify_payloads(channels: Iterable[str], limit: int = NOTIFY_PAYLOAD_LIMIT) -> Iterator[str]:
    """Yield JSON lists of channels, each under ``limit`` bytes once encoded.

    One transaction may touch thousands of channels; a single NOTIFY carrying
    them all would be refused by PostgreSQL and the whole post would look
    failed although it committed. Channels are already JSON text, so the list
    is assembled from the pieces and measured in bytes as it grows.
    """
    batch: list[str] = []
    size = 2  # the brackets
    for channel in channels:
        piece = len(channel.encode("utf-8"))
        if piece + 2 > limit:
            raise ValueError(f"channel too long to notify: {channel[:80]}...")
        extra = piece + (1 if batch else 0)
        if batch and size + extra > limit:
            yield "[" + ",".join(batch) + "]"
            batch, size = [], 2
            extra = piece
        batch.append(channel)
        size += extra
    if batch:
        yield "[" + ",".join(batch) + "]"


def parse_notify_payload(payload: str) -> list[str]:
    """Channel keys named by one NOTIFY, re-encoded so they match stored keys."""
    try:
        channels = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(channels, list):
        return []
    return [dumps(channel) for channel in channels if isinstance(channel, list)]


def encode_entry(row_id: int, message: str) -> bytes:
    """One item of a poll answer, as UTF-8, built from the stored JSON text
    without decoding it, so the same bytes can go to every poller."""
    return ('{"id":%d,"message":%s}' % (row_id, message)).encode()


def entry_id(entry: bytes) -> int:
    """The id of an entry made by :func:`encode_entry`, read without decoding it."""
    return int(entry[6:entry.index(b",", 6)])


class Entries(Sequence[bytes]):
    """The encoded entries of one poll answer, shared by every poll that
    gets the same answer (the dispatcher hands one object to all the polls
    of a channel set). Their JSON array is built once, not once per poll, or
    comes ready as slices of the dispatcher's blocks (see ``bus.window``).

    It is a view of ``items[start:stop]``, copied out only when someone
    iterates it: a poller far behind gets thousands of entries that the
    server writes as block slices and never looks at one by one. ``items``
    must not change in that range (the dispatcher's logs only grow).
    """

    __slots__ = ("_items", "_start", "_stop", "_parts", "_cut")

    def __init__(self, items: Optional[list[bytes]] = None, parts: Optional[list[bytes | memoryview]] = None,
                 start: int = 0, stop: Optional[int] = None) -> None:
        items = [] if items is None else items
        self._items = items
        self._start = start
        self._stop = len(items) if stop is None else stop
        self._parts = parts
        #: (prefixes, how many entries cut_after_types keeps with them: None for all)
        self._cut: Optional[tuple[tuple[bytes, ...], Optional[int]]] = None

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._list()[index]
        return self._items[range(self._start, self._stop)[index]]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, Entries)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Entries({self._list()!r})"

    def _list(self) -> list[bytes]:
        return self._items[self._start:self._stop]

    def json_parts(self) -> list[bytes | memoryview]:
        if self._parts is None:
            self._parts = [_array(self._list())]
        return self._parts


def array_parts(entries: Sequence[bytes]) -> list[bytes | memoryview]:
    """A poll answer's JSON array of encoded entries, as buffers (bytes or
    memoryviews of shared blocks) to be written one after the other."""
    if isinstance(entries, Entries):
        return entries.json_parts()
    return [_array(entries)]


def _array(entries: Sequence[bytes]) -> bytes:
    return b"[%b]" % b",".join(entries)


def message_type_prefixes(types: Iterable[str]) -> tuple[str, ...]:
    """What a stored message of one of ``types`` starts with (see
    :func:`encode_message`): ``message.startswith(prefixes)`` tells its type
    without decoding it."""
    return tuple('{"type":%s,' % dumps(kind) for kind in types)


def type_prefixes(types: Iterable[str]) -> tuple[bytes, ...]:
    """What an encoded entry of one of ``types`` holds right after its id."""
    return tuple((',"message":{"type":%s,' % dumps(kind)).encode() for kind in types)


def cut_after_types(entries: Sequence[bytes], prefixes: tuple[bytes, ...]) -> Sequence[bytes]:
    """``entries`` up to and including the first of a type in ``prefixes``
    (from :func:`type_prefixes`).

    An entry is ``{"id":N,"message":{"type":...`` (see :func:`encode_entry`
    and :func:`encode_message`), so the type sits right after the first comma
    and a prefix test finds it without decoding anything.

    Shared entries are scanned once, not once per poll that gets them: one
    message woke 1,000 polls whose answers are the same object.
    """
    if isinstance(entries, Entries):
        known = entries._cut
        if known is None or known[0] is not prefixes:
            known = entries._cut = (prefixes, _cut_length(entries, prefixes))
        return entries if known[1] is None else entries[:known[1]]
    length = _cut_length(entries, prefixes)
    return entries if length is None else entries[:length]


def _cut_length(entries: Sequence[bytes], prefixes: tuple[bytes, ...]) -> Optional[int]:
    """How many entries to keep, or None for all (no cycle through the memo)."""
    for index, entry in enumerate(entries):
        if entry.startswith(prefixes, entry.index(b",")):
            return index + 1
    return None
