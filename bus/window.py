"""The newest final rows of a process, kept in memory per channel, so that a
woken poll answers from here instead of from the database.

A poller that fell behind under load asks for thousands of rows at once,
and every such poller asks from a ``last`` of its own, so their answers are
not shared. Building each one as a fresh byte string (join the entries,
wrap them in the JSON-RPC envelope, put the HTTP head in front) made the
server spend most of its time copying and faulting in fresh memory for
answers of a few hundred kilobytes. So each channel also keeps its entries
as one comma-separated stream, held in a few large immutable blocks: an
answer is a handful of slices of those blocks (``memoryview``, no copy),
which a server that gathers its writes sends with one system call (see
``bus.handler``) and any other server gets joined once.

Blocks are merged as they come, like a binary counter (a block is merged
into the one before it while that one is less than twice its size, up to
``block_max`` bytes), so a channel's stream is a few dozen blocks at most
and every byte is copied a few times in its life, not once per poller.
"""
from __future__ import annotations

import bisect
from typing import Iterable, Optional, Sequence

from .channels import Entries, Row, encode_entry

#: Merged blocks stop growing past this size; an answer is then a few of them.
BLOCK_MAX = 256 * 1024
#: Answers smaller than this are joined into one bytes object, once for all
#: the polls that share them: a few iovecs cost more than copying them.
SMALL_ANSWER = 8 * 1024


class ChannelLog:
    """One channel's rows in the window, in id order.

    Rows are appended in place, ids last, and a reader bounds what it reads
    by the dispatcher's position, so it never sees a row half added. The
    blocks are a tuple pair replaced as a whole, so a reader always gets a
    consistent pair.
    """

    __slots__ = ("ids", "entries", "ends", "base", "blocks", "_last_answer")

    def __init__(self, base: int = 0, blocks: tuple[tuple[int, ...], tuple[bytes, ...]] = ((), ())) -> None:
        self.ids: list[int] = []
        self.entries: list[bytes] = []
        #: Offset in the channel's stream just past each entry's comma.
        self.ends: list[int] = []
        #: Offset in the stream of the first entry still kept.
        self.base = base
        #: (start offset of each block, the blocks); every entry is followed
        #: by a comma in the stream.
        self.blocks = blocks
        #: The last answer built, (start, end, entries): the polls of many
        #: audiences (one per logged-in user, each with a channel of its own)
        #: woken by one message all ask for the same span.
        self._last_answer: Optional[tuple[int, int, Entries]] = None

    def extend(self, ids: list[int], entries: list[bytes], block_max: int) -> None:
        """Append one read's rows of this channel: a new block, merged into
        the one before it while that one is less than twice its size."""
        starts, blocks = self.blocks
        offset = starts[-1] + len(blocks[-1]) if blocks else self.base
        block = b",".join([*entries, b""])
        starts, blocks = starts + (offset,), blocks + (block,)
        while len(blocks) > 1 and len(blocks[-2]) < 2 * len(blocks[-1]) \
                and len(blocks[-2]) + len(blocks[-1]) <= block_max:
            starts, blocks = starts[:-1], blocks[:-2] + (blocks[-2] + blocks[-1],)
        self.blocks = (starts, blocks)
        ends = self.ends
        for entry in entries:
            offset += len(entry) + 1
            ends.append(offset)
        self.entries.extend(entries)
        self.ids.extend(ids)

    def span(self, last: int, position: int) -> tuple[int, int]:
        """The indexes [start, end) of the entries with ids in (last, position]."""
        ids = self.ids
        start = bisect.bisect_right(ids, last)
        return start, bisect.bisect_right(ids, position, start)

    def answer(self, start: int, end: int) -> Entries:
        """Entries ``start`` to ``end`` (not empty), with their JSON array as
        slices of the blocks; the same object for the same span asked again."""
        last = self._last_answer
        if last is not None and last[0] == start and last[1] == end:
            return last[2]
        entries = self._build(start, end)
        self._last_answer = (start, end, entries)
        return entries

    def _build(self, start: int, end: int) -> Entries:
        first = self.ends[start - 1] if start else self.base
        stop = self.ends[end - 1] - 1  # the last entry's comma is left out
        starts, blocks = self.blocks
        parts: list[bytes | memoryview] = [b"["]
        for index in range(bisect.bisect_right(starts, first) - 1, len(blocks)):
            offset = starts[index]
            if offset >= stop:
                break
            block = blocks[index]
            lo, hi = max(first - offset, 0), min(stop - offset, len(block))
            parts.append(block if lo == 0 and hi == len(block) else memoryview(block)[lo:hi])
        parts.append(b"]")
        if stop - first < SMALL_ANSWER:
            parts = [b"".join(parts)]
        return Entries(self.entries, parts, start, end)

    def after(self, floor: int) -> Optional[ChannelLog]:
        """A copy without the rows at or below ``floor``, or None if none is left."""
        start = bisect.bisect_right(self.ids, floor)
        if start == len(self.ids):
            return None
        base = self.ends[start - 1] if start else self.base
        starts, blocks = self.blocks
        first = bisect.bisect_right(starts, base) - 1
        kept = ChannelLog(base, (starts[first:], blocks[first:]))
        kept.ids, kept.entries, kept.ends = self.ids[start:], self.entries[start:], self.ends[start:]
        return kept


class Window:
    """The newest ``size`` (to twice that) final rows, per channel.

    Trimming publishes the new floor, then the new logs; a reader takes the
    logs, then the floor, and so never misses a row.
    """

    def __init__(self, size: int, floor: int = 0, block_max: int = BLOCK_MAX) -> None:
        self.size = size
        self.block_max = block_max
        self.logs: dict[str, ChannelLog] = {}
        #: Every final row with a larger id is in the window.
        self.floor = floor
        self._rows = 0

    def add(self, rows: Sequence[Row]) -> None:
        """Take final rows, in id order."""
        batches: dict[str, tuple[list[int], list[bytes]]] = {}
        for row_id, channel, message in rows:
            batch = batches.get(channel)
            if batch is None:
                batch = batches[channel] = ([], [])
            batch[0].append(row_id)
            batch[1].append(encode_entry(row_id, message))
        logs = self.logs
        for channel, (ids, entries) in batches.items():
            log = logs.get(channel)
            if log is None:
                log = logs[channel] = ChannelLog()
            log.extend(ids, entries, self.block_max)
        self._rows += len(rows)
        if self._rows > 2 * self.size:
            self._trim()

    def answer(self, channels: Iterable[str], last: int, position: int) -> Optional[Entries]:
        """The entries with ids in (last, position] on ``channels``, in id
        order, or None when rows after ``last`` may have left the window."""
        logs = self.logs
        if last < self.floor:
            return None
        spans = []
        for channel in channels:
            log = logs.get(channel)
            if log is not None:
                start, end = log.span(last, position)
                if start < end:
                    spans.append((log, start, end))
        if not spans:
            return Entries()
        if len(spans) == 1:  # the common case: one channel has news
            return spans[0][0].answer(spans[0][1], spans[0][2])
        merged = sorted(pair for log, start, end in spans
                        for pair in zip(log.ids[start:end], log.entries[start:end]))
        return Entries([entry for _, entry in merged])

    def _trim(self) -> None:
        """Keep the newest ``size`` rows: memory stays bounded, and pollers
        further behind read from the database."""
        ids = sorted(row_id for log in self.logs.values() for row_id in log.ids[-self.size:])
        floor = ids[-self.size] - 1
        kept = {}
        for channel, log in self.logs.items():
            rest = log.after(floor)
            if rest is not None:
                kept[channel] = rest
        self.floor = floor
        self.logs = kept
        self._rows = sum(len(log.ids) for log in kept.values())
