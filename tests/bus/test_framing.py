"""Request framing, over raw sockets against a real ``python -m bus serve``
gevent process (the production server): where a body ends must never be in
doubt, or the bytes after it are read as a request of their own (request
smuggling). A malformed body gets one 400 and the connection closes; a head
that is ambiguous or too large is refused; a refused body closes the
connection instead of holding it. Each case runs on a fresh connection of
one server, which must go on serving."""
import json

import pytest

from bus import Database, sendone
from tests.bus.test_servers import server_of_its_own
from tests.raw_http import POLL, Connection, health, poll_body, post_poll, request

pytestmark = pytest.mark.slow

#: What a smuggler puts after the malformed part: served, it would answer 200.
SMUGGLED = health(b"Host: 127.0.0.1")
CHUNKED_POLL = request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Type: application/json",
                       b"Transfer-Encoding: chunked")
BODY = poll_body(["room"], 0)


@pytest.fixture(scope="module")
def server(server_url, tmp_path_factory):
    with server_of_its_own(server_url, tmp_path_factory.mktemp("framing")) as server:
        database = Database(server.database_url, maxconn=1)
        try:
            with database.transaction() as tx:
                sendone(tx, "room", "test", "hello")
        finally:
            database.close()
        yield server


@pytest.fixture
def connection(server):
    logged = len(server.log())
    connection = Connection(server.port)
    yield connection
    connection.close()
    assert "Traceback" not in server.log()[logged:]


def assert_one_answer_then_closed(connection, status):
    """Exactly one answer, with ``status``, then the end of the connection:
    nothing after the malformed part was served."""
    answer = connection.read_answer()
    assert answer is not None, "the connection ended without an answer"
    assert answer.status == status, answer
    assert connection.wait_ended(5) is not None, f"the connection stayed open after {answer}"
    assert connection.buffer == b"", f"something more was answered: {connection.buffer[:200]!r}"
    return answer


@pytest.mark.parametrize("malformed", [
    b"Z",  # not a hex digit
    b"0x",  # a prefix int() would take
    b"-",  # a sign
    b"5 ",  # a space after the size
    b"0" * 17,  # more hex digits than a 64-bit size has
    b"5\r\nhelloX",  # data longer than its size
    b"5\n",  # a bare LF ending the size line
], ids=["Z", "0x", "minus", "trailing space", "17 hex digits", "data longer than its size", "bare LF"])
def test_a_malformed_chunk_gets_400_and_closes_before_what_follows_is_read(connection, malformed):
    connection.send(CHUNKED_POLL + malformed + SMUGGLED)
    answer = assert_one_answer_then_closed(connection, 400)
    assert answer.fields["connection"] == "close"
    assert json.loads(answer.body)["error"]["data"]["name"] == "invalid_request"


def test_a_well_formed_chunked_body_is_served_and_the_connection_goes_on(connection):
    connection.send(CHUNKED_POLL + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY) + SMUGGLED)
    answer = connection.read_answer()
    assert answer.status == 200, answer
    assert [e["message"]["payload"] for e in json.loads(answer.body)["result"]] == ["hello"]
    assert connection.read_answer().status == 200  # the next request on the connection


@pytest.mark.parametrize("length", [b"+%d" % len(BODY), b"%d_%d" % divmod(len(BODY), 10), b"%d\xa0" % len(BODY)],
                         ids=["plus sign", "underscore", "no-break space"])
def test_a_content_length_of_anything_but_digits_is_refused(connection, length):
    # Python's int() reads each of these as the body's length.
    connection.send(request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Length: " + length, body=BODY))
    assert_one_answer_then_closed(connection, 400)


def test_http_1_0_with_transfer_encoding_closes_after_its_answer(connection):
    connection.send(request(b"POST", POLL, b"Connection: keep-alive", b"Content-Type: application/json",
                            b"Transfer-Encoding: chunked", version=b"HTTP/1.0")
                    + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY) + SMUGGLED)
    answer = assert_one_answer_then_closed(connection, 200)
    assert answer.fields["connection"] == "close"


def test_http_1_0_may_keep_its_connection_without_transfer_encoding(connection):
    connection.send(health(b"Connection: keep-alive", version=b"HTTP/1.0") + SMUGGLED)
    assert connection.read_answer().status == 200
    assert connection.read_answer().status == 200


def test_a_head_over_64_kib_is_refused(connection):
    # Each line far below the 64 KiB a line the standard library allows.
    lines = [b"X-Filler-%d: %s" % (n, b"a" * 1000) for n in range(66)]
    connection.send(post_poll(BODY, *lines))
    assert connection.read_answer().status in (400, 431)
    assert connection.wait_ended(5) is not None


def test_a_head_at_the_limit_is_served(connection):
    lines = [b"X-Filler-%d: %s" % (n, b"a" * 1000) for n in range(60)]
    connection.send(post_poll(BODY, *lines))
    assert connection.read_answer().status == 200


@pytest.mark.parametrize("hosts", [(), (b"Host: 127.0.0.1", b"Host: 127.0.0.1"), (b"Host: a", b"host: b")],
                         ids=["none", "twice", "two names"])
def test_http_1_1_needs_exactly_one_host(connection, hosts):
    connection.send(health(*hosts) + SMUGGLED)
    assert_one_answer_then_closed(connection, 400)


def test_http_1_0_needs_no_host(connection):
    connection.send(health(version=b"HTTP/1.0"))
    assert connection.read_answer().status == 200


def test_a_body_declared_over_the_limit_and_never_sent_gets_413_and_the_connection_closes(connection):
    connection.send(request(b"POST", POLL, b"Host: 127.0.0.1", b"Content-Type: application/json",
                            b"Content-Length: 10000000"))
    answer = connection.read_answer()
    assert answer.status == 413, answer
    assert answer.fields["connection"] == "close"
    # Long before the 30 s the body would otherwise have.
    assert connection.wait_ended(5) is not None, "the connection stayed open after the 413"


def test_a_body_over_the_limit_sent_whole_gets_its_413_rather_than_a_reset(connection):
    body = b'{"jsonrpc":"2.0","method":"call","params":{"channels":["' + b"x" * (1024 * 1024 + 10) + b'"]}}'
    connection.send(post_poll(body))
    answer = connection.read_answer()
    assert answer is not None and not connection.reset, "the server reset the connection instead of answering"
    assert answer.status == 413, answer
    assert connection.wait_ended(10) is not None
