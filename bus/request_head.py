"""Request heads for gevent's pywsgi, parsed without the email package.

gevent's ``WSGIHandler`` reads the header lines of every request with the
standard library's ``http.client.parse_headers``, which runs them through
``email.feedparser``: about 30 us for the three headers of a poll and 80 us
for a browser's ten, paid again by every re-poll (a fan-out to 10,000 polls
is followed by 10,000 re-polls). :func:`read_head` reads them with the same
limits (65,536 bytes a line, 100 lines) into a small mapping that answers
what pywsgi asks of its headers object, in a few microseconds
(``bus.handler.Handler`` plugs it in).

It is stricter than the email parser where RFC 9112 asks a server to be,
and where a lenient reading would let a request be framed differently by a
proxy in front and by this server (request smuggling). Answered with 400:

* a header line without a colon, whose name is not a token (whitespace
  before the colon, say), or whose value holds control characters (a bare
  CR, NUL);
* an obsolete folded continuation line (RFC 9112 5.2 allows refusing it);
* a head cut off by the end of the stream;
* a Transfer-Encoding other than one plain ``chunked``, or next to a
  Content-Length, and Content-Length fields that disagree.
"""
from __future__ import annotations

import re
from typing import BinaryIO, Iterator, Optional

#: The limits ``http.client`` applies, which pywsgi relied on until now.
MAX_LINE = 65536
MAX_HEADERS = 100

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Visible characters, space and tab; latin-1 bytes from 0x80 (obs-text).
_VALUE = re.compile("[\t\x20-\x7e\x80-\xff]*")


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
    for _ in range(MAX_HEADERS + 1):
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return RequestHead([], "Line too long")
        if line in (b"\r\n", b"\n"):
            return RequestHead(fields, _framing_error(fields))
        if not line.endswith(b"\n"):
            return RequestHead([], "Request head cut off")
        text = line[:-2 if line.endswith(b"\r\n") else -1].decode("latin-1")
        if text[:1] in (" ", "\t"):
            return RequestHead([], "Folded header line")
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            return RequestHead([], "Invalid header line")
        fields.append((name, value.strip(" \t")))
    return RequestHead([], f"More than {MAX_HEADERS} headers")


def _framing_error(fields: list[tuple[str, str]]) -> str:
    """Why the body's length is ambiguous, or "" when it is not."""
    encodings = [value for name, value in fields if name.lower() == "transfer-encoding"]
    lengths = {value for name, value in fields if name.lower() == "content-length"}
    if encodings:
        if len(encodings) > 1 or encodings[0].lower() != "chunked":
            return "Unsupported Transfer-Encoding"
        if lengths:
            return "Both Transfer-Encoding and Content-Length"
    if len(lengths) > 1:
        return "Conflicting Content-Length"
    return ""
