"""Request heads for gevent's pywsgi, parsed without the email package.

gevent's ``WSGIHandler`` reads the header lines of every request with the
standard library's ``http.client.parse_headers``, which runs them through
``email.feedparser``: about 30 us for the three headers of a poll and 80 us
for a browser's ten, paid again by every re-poll (a fan-out to 10,000 polls
is followed by 10,000 re-polls). :class:`Handler` reads them with the same
limits (65,536 bytes a line, 100 lines) into a small mapping that answers
what pywsgi asks of its headers object, in a few microseconds.

It is stricter than the email parser where RFC 9112 asks a server to be: a
header line without a colon, or whose name is not a token (whitespace
before the colon, say), is refused with 400 instead of being taken as the
start of the body.
"""
from __future__ import annotations

import re
from typing import BinaryIO, Iterator, Optional

from gevent.pywsgi import WSGIHandler

#: The limits ``http.client`` applies, which pywsgi relied on until now.
MAX_LINE = 65536
MAX_HEADERS = 100

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_END = (b"\r\n", b"\n", b"")


class RequestHead:
    """A request's header fields in arrival order, looked up by lower-case
    name (the first field of a name wins, as with the email parser).

    ``status`` is empty for a well-formed head; otherwise it says what was
    wrong, and pywsgi answers 400.
    """

    __slots__ = ("status", "_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]], status: str = "") -> None:
        self.status = status
        self._fields = fields
        self._first = {name.lower(): value for name, value in reversed(fields)}

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._first.get(name.lower(), default)

    getheader = get

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        self._fields = [(n, v) for n, v in self._fields if n.lower() != key]
        self._first.pop(key, None)

    @property
    def headers(self) -> Iterator[str]:
        """The fields as ``Name: value`` lines, as pywsgi builds its environ from."""
        return (f"{name}: {value}\r\n" for name, value in self._fields)

    @property
    def typeheader(self) -> Optional[str]:
        return self._first.get("content-type")


def read_head(stream: BinaryIO) -> RequestHead:
    """Read header lines up to the empty line that ends them."""
    fields: list[tuple[str, str]] = []
    while True:
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return RequestHead([], "Line too long")
        if line in _END:
            return RequestHead(fields)
        if len(fields) >= MAX_HEADERS:
            return RequestHead([], f"More than {MAX_HEADERS} headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            # An obsolete folded continuation (RFC 9112 5.2): one space
            # stands for the line break.
            if not fields:
                return RequestHead([], "Continuation line before any header")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}".strip())
            continue
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            return RequestHead([], "Invalid header line")
        fields.append((name, value.strip()))


class Handler(WSGIHandler):
    """gevent's pywsgi handler with :func:`read_head` as its header parser."""

    def MessageClass(self, stream: BinaryIO, *args: object) -> RequestHead:  # noqa: N802 - pywsgi's name
        return read_head(stream)
