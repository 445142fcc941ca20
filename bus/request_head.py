"""Request heads for gevent's pywsgi, parsed without the email package.

gevent's ``WSGIHandler`` reads the header lines of every request with the
standard library's ``http.client.parse_headers``, which runs them through
``email.feedparser``: about 30 us for the three headers of a poll and 80 us
for a browser's ten, paid again by every re-poll (a fan-out to 10,000 polls
is followed by 10,000 re-polls). :func:`read_head` reads them into a small
mapping that answers what pywsgi asks of its headers object, in a few
microseconds (``bus.handler.Handler`` plugs it in).

The standard library's limits (65,536 bytes a line, 100 lines) let one head
take 6.5 MB of memory; here the whole head is held to 64 KiB (by default
nginx allows 32 KiB, Node.js 16 KiB), still within 100 lines, and refused
with 431 past that.

It is stricter than the email parser where RFC 9112 asks a server to be,
and where a lenient reading would let a request be framed differently by a
proxy in front and by this server (request smuggling). Answered with 400:

* a header line without a colon, whose name is not a token (whitespace
  before the colon, say), or whose value holds control characters (a bare
  CR, NUL);
* an obsolete folded continuation line (RFC 9112 5.2 allows refusing it);
* a head cut off by the end of the stream;
* a Transfer-Encoding other than one plain ``chunked``, or next to a
  Content-Length, a Content-Length that is not plain digits (``+5``,
  ``1_23`` and ``5\\xa0`` are numbers to Python's ``int``), and
  Content-Length fields that disagree;
* more than one Host field, or none where the caller says one is required
  (an HTTP/1.1 request: RFC 9112 3.2).
"""
from __future__ import annotations

import re
from typing import BinaryIO, Iterator, Optional

#: Bytes the header lines of one request may take, line ends included.
MAX_HEAD = 65536
#: Header lines one request may have, as ``http.client`` allows.
MAX_HEADERS = 100
#: The status of a head refused for its size.
TOO_LARGE = 431

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Visible characters, space and tab; latin-1 bytes from 0x80 (obs-text).
_VALUE = re.compile("[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile("[0-9]+")


class RequestHead:
    """A request's header fields in arrival order, looked up by lower-case
    name (the first field of a name wins, as with the email parser).

    ``status`` is empty for a well-formed head; otherwise it says what was
    wrong, and ``code`` is the HTTP status to refuse it with (pywsgi's own
    handler answers 400 whatever the code).
    """

    __slots__ = ("status", "code", "_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]], status: str = "", code: int = 400) -> None:
        self.status = status
        self.code = code
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


def read_head(stream: BinaryIO, host_required: bool = False) -> RequestHead:
    """Read header lines up to the empty line that ends them."""
    fields: list[tuple[str, str]] = []
    left = MAX_HEAD
    for _ in range(MAX_HEADERS + 1):
        line = stream.readline(left + 1)
        if len(line) > left:
            return RequestHead([], f"Request head over {MAX_HEAD} bytes", TOO_LARGE)
        left -= len(line)
        if line in (b"\r\n", b"\n"):
            return RequestHead(fields, _framing_error(fields, host_required))
        if not line.endswith(b"\n"):
            return RequestHead([], "Request head cut off")
        text = line[:-2 if line.endswith(b"\r\n") else -1].decode("latin-1")
        if text[:1] in (" ", "\t"):
            return RequestHead([], "Folded header line")
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            return RequestHead([], "Invalid header line")
        fields.append((name, value.strip(" \t")))
    return RequestHead([], f"More than {MAX_HEADERS} headers", TOO_LARGE)


def _framing_error(fields: list[tuple[str, str]], host_required: bool) -> str:
    """Why the body's length or the request's host is ambiguous, or "" when
    neither is."""
    encodings, lengths, hosts = [], set(), 0
    for name, value in fields:
        name = name.lower()
        if name == "content-length":
            lengths.add(value)
        elif name == "transfer-encoding":
            encodings.append(value)
        elif name == "host":
            hosts += 1
    if hosts != 1 and (hosts or host_required):
        return "More than one Host" if hosts else "No Host"
    if encodings:
        if len(encodings) > 1 or encodings[0].lower() != "chunked":
            return "Unsupported Transfer-Encoding"
        if lengths:
            return "Both Transfer-Encoding and Content-Length"
    if len(lengths) > 1:
        return "Conflicting Content-Length"
    if lengths and not _DIGITS.fullmatch(next(iter(lengths))):
        return "Invalid Content-Length"
    return ""
