"""The request-head parser that replaces the email package in gevent's
pywsgi: what pywsgi asks of it, and malformed heads refused with 400 by a
real ``python -m bus serve --server gevent`` process."""
import io
import json
import socket

import pytest

from bus import sendone
from bus.request_head import MAX_HEAD, MAX_HEADERS, TOO_LARGE, read_head
from tests.bus.test_servers import start_server  # noqa: F401 - a fixture


def head(*lines: bytes):
    return read_head(io.BufferedReader(io.BytesIO(b"".join(line + b"\r\n" for line in lines) + b"\r\nBODY")))


def test_fields_are_found_by_any_case_and_the_first_of_a_name_wins():
    parsed = head(b"Host: example", b"content-TYPE:  application/json  ", b"X-Twice: one", b"x-twice: two")
    assert parsed.status == ""
    assert parsed.get("HOST") == "example"
    assert parsed.typeheader == "application/json"
    assert parsed.getheader("X-TWICE") == "one"
    assert parsed.get("missing", "default") == "default"
    assert list(parsed.headers) == ["Host: example\r\n", "content-TYPE: application/json\r\n",
                                    "X-Twice: one\r\n", "x-twice: two\r\n"]


def test_the_head_ends_at_the_empty_line_and_leaves_the_body_unread():
    stream = io.BufferedReader(io.BytesIO(b"Content-Length: 4\r\n\r\nBODY"))
    assert read_head(stream).get("content-length") == "4"
    assert stream.read() == b"BODY"


def test_deleting_a_field_removes_every_field_of_that_name():
    parsed = head(b"X-Dup: 5", b"Host: h", b"x-dup: 6")
    del parsed["X-DUP"]
    assert parsed.get("x-dup") is None
    assert list(parsed.headers) == ["Host: h\r\n"]


@pytest.mark.parametrize("lines", [
    [b"no colon here"],
    [b"Space Inside: x"],
    [b"Space-Before : x"],
    [b": no name"],
    [b"X-Long: first", b"   folded"],
    [b" continuation first"],
    [b"Host: h", b"X-Bad\x00Name: v"],
    [b"X-Bare-CR: a\rTransfer-Encoding: chunked"],
    [b"X-Nul: a\x00b"],
    [b"Transfer-Encoding: gzip, chunked"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
    [b"Content-Length: 5", b"Content-Length: 6"],
    [b"Content-Length: +5"],
    [b"Content-Length: 1_23"],
    [b"Content-Length: 5\xa0"],
    [b"Content-Length: \xb2"],
    [b"Content-Length: -0"],
    [b"Content-Length: "],
    [b"Content-Length: 5, 5"],
    [b"Host: a", b"Host: b"],
    [b"Host: a", b"host: a"],
])
def test_malformed_or_ambiguous_heads_are_refused(lines):
    refused = head(*lines)
    assert refused.status
    assert refused.code == 400


def test_tabs_latin1_and_repeated_equal_lengths_are_accepted():
    parsed = head(b"X-Tab: a\tb", b"X-Latin: caf\xe9", b"Content-Length: 5", b"content-length: 5")
    assert parsed.status == ""
    assert parsed.get("x-tab") == "a\tb"
    assert parsed.get("x-latin") == "caf\u00e9"
    assert head(b"Transfer-Encoding: Chunked").status == ""


def test_a_head_cut_off_by_the_end_of_the_stream_is_refused():
    assert read_head(io.BufferedReader(io.BytesIO(b"Host: h\r\nX-Half: va"))).status
    assert read_head(io.BufferedReader(io.BytesIO(b"Host: h\r\n"))).status


def test_a_head_over_its_size_or_line_count_is_refused_as_too_large():
    assert head(b"X-Long: " + b"a" * MAX_HEAD).code == TOO_LARGE
    # Each line well under the standard library's 64 KiB, the whole over the limit.
    assert head(*[b"X-%d: " % n + b"a" * 1000 for n in range(66)]).code == TOO_LARGE
    assert head(*[b"X-%d: " % n + b"a" * 1000 for n in range(64)]).status == ""
    assert head(*[b"X-%d: v" % n for n in range(MAX_HEADERS + 1)]).code == TOO_LARGE
    assert head(*[b"X-%d: v" % n for n in range(MAX_HEADERS)]).status == ""


def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection: the answer's status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def poll_request(body: bytes, *header_lines: bytes, length=None) -> bytes:
    length = len(body) if length is None else length
    lines = [b"POST /longpolling/poll HTTP/1.1", b"Host: 127.0.0.1", *header_lines,
             b"Content-Length: %d" % length, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.slow
def test_the_gevent_server_refuses_malformed_heads_and_serves_good_ones(start_server, database_url):  # noqa: F811
    from bus import Database

    server = start_server("gevent")
    database = Database(database_url, maxconn=1)
    try:
        with database.transaction() as tx:
            sendone(tx, "room", "test", "hello")
    finally:
        database.close()
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 3,
                       "params": {"channels": ["room"], "last": 0}}).encode()

    for bad in (b"Not A Header", b"Bad Name: x", b"X-Folded: one\r\n  two",
                b"Transfer-Encoding: chunked"):
        status, _ = exchange(server.port, poll_request(body, bad))
        assert status == 400

    lower_case = poll_request(body, b"content-type: application/json", b"X-Latin: caf\xe9")
    status, answer = exchange(server.port, lower_case)
    assert status == 200
    assert [e["message"]["payload"] for e in json.loads(answer)["result"]] == ["hello"]


@pytest.mark.slow
def test_a_body_shorter_than_its_content_length_is_a_clear_error(start_server):  # noqa: F811
    server = start_server("gevent")
    body = (b'{"jsonrpc": "2.0", "method": "call", "id": 4,'
            b' "params": {"channels": [], "last": 0, "options": {"peek": true}}}')
    status, answer = exchange(server.port, poll_request(body, length=len(body) + 50))
    assert status == 400
    assert json.loads(answer)["error"]["data"]["name"] == "invalid_request"
    status, answer = exchange(server.port, poll_request(body))
    assert status == 200 and json.loads(answer)["result"] == []


def test_the_handler_skips_the_access_log_only_when_there_is_none():
    from gevent.pywsgi import WSGIServer

    from bus.handler import Handler

    class Recorded(Handler):
        def __init__(self, server):
            self.server = server
            self.formatted = 0

        def format_request(self):
            self.formatted += 1
            return "a line"

    quiet = Recorded(WSGIServer(("127.0.0.1", 0), None, log=None))
    quiet.log_request()
    assert quiet.formatted == 0
    lines = []
    written = type("Log", (), {"write": lambda self, line: lines.append(line)})()
    logged = Recorded(WSGIServer(("127.0.0.1", 0), None, log=written))
    logged.log_request()
    assert lines == ["a line\n"]
