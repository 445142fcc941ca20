"""Bad requests get a clear JSON-RPC error, and the server goes on serving:
every case is followed by a normal poll on the same server. Bad parameters
are an application error, answered as Odoo 15 answers one (HTTP 200); a body
that cannot be read or is too large keeps an HTTP error status."""
import json

import pytest
import requests

from bus import sendone
from bus.app import BusApp
from bus.config import DEFAULT_MAX_CHANNEL_NAME, DEFAULT_MAX_POLL_CHANNELS, Settings
from tests.support import INVALID_PARAMS, SERVER_ERROR, odoo_error, poll, transport_error

POLL = "/longpolling/poll"
MAX_BODY = 1024 * 1024


def envelope(params):
    return {"jsonrpc": "2.0", "method": "call", "params": params, "id": 7}


def send_raw(url, body, **headers):
    return requests.post(url + POLL, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10)


@pytest.fixture
def still_serving(app, http):
    """Checks, after the test, that a good poll is still answered correctly
    by the same server."""
    yield
    assert_serving(app, http)


def assert_serving(app, http):
    with app.database.transaction() as tx:
        sendone(tx, "room", "test", "still here")
    entries = poll(http.url, ["room"], 0)
    assert payloads(entries)[-1:] == ["still here"]


def payloads(entries):
    return [e["message"]["payload"] for e in entries]


MALFORMED = [b"{", b"not json", b'{"jsonrpc": "2.0", "params": {', b"\xff\xfe\x00", b""]
NOT_AN_OBJECT = [[], [envelope({})], "call", 42, None]
BAD_PARAMS = [
    [],
    "channels",
    7,
    {"channels": "room", "last": 0},
    {"channels": {"room": True}, "last": 0},
    {"channels": ["mail.channel", 5], "last": 0},
    {"channels": [5], "last": 0},
    {"channels": [["mail.channel", 5]], "last": 0},
    {"channels": [None], "last": 0},
    {"channels": ["room"], "last": "12"},
    {"channels": ["room"], "last": True},
    {"channels": ["room"], "last": -1},
    {"channels": ["room"], "last": 1.5},
    {"channels": ["room"], "last": 0, "options": []},
    {"channels": ["room"], "last": 0, "options": "peek"},
]


def test_malformed_json_is_a_parse_error(app, http):
    for body in MALFORMED:
        transport_error(send_raw(http.url, body), 400, -32700)
        assert_serving(app, http)


def test_a_body_nested_too_deep_is_a_parse_error(app, http):
    """Python's JSON decoder recurses per level and gives up with a
    RecursionError: that is a body the server cannot read, not a bug."""
    deep = b"[" * 100_000
    for body in (deep, b"[" * 5_000 + b"]" * 5_000, b'{"jsonrpc": "2.0", "id": 7, "params": {"channels": ' + deep):
        transport_error(send_raw(http.url, body), 400, -32700)
        assert_serving(app, http)


def test_a_body_that_is_not_an_object_is_an_invalid_request(app, http):
    for body in NOT_AN_OBJECT:
        transport_error(send_raw(http.url, json.dumps(body)), 400, -32600)
        assert_serving(app, http)


def test_bad_params_are_invalid_params_as_odoo_sends_them(app, http):
    for params in BAD_PARAMS:
        response = send_raw(http.url, json.dumps(envelope(params)))
        odoo_error(response.status_code, response.json(), INVALID_PARAMS)
        assert_serving(app, http)


def test_a_poll_needs_channels_and_last(app, http):
    """Odoo 15's ``poll(channels, last, options=None)`` cannot be called
    without either; a poll that could not say what it listens to, or from
    where, must not be parked as if it had."""
    for body in [
        {"jsonrpc": "2.0", "method": "call", "id": 7},
        envelope(None),
        envelope({}),
        envelope({"last": 0}),
        envelope({"channels": None, "last": 0}),
        envelope({"channels": ["room"]}),
        envelope({"channels": ["room"], "last": None}),
    ]:
        response = send_raw(http.url, json.dumps(body))
        message = odoo_error(response.status_code, response.json(), INVALID_PARAMS)["data"]["message"]
        assert "'channels'" in message or "'last'" in message, message
        assert response.json()["id"] == 7
    assert_serving(app, http)


def test_a_poll_names_a_bounded_number_of_channels_of_bounded_length(app, http):
    with app.database.transaction() as tx:
        sendone(tx, "hall", "test", "hello")
    most = ["hall", *(f"c{i}" for i in range(DEFAULT_MAX_POLL_CHANNELS - 1))]
    longest = "x" * DEFAULT_MAX_CHANNEL_NAME
    assert payloads(poll(http.url, [*most[:-1], longest], 0)) == ["hello"]
    for channels, words in ((most + ["one more"], f"at most {DEFAULT_MAX_POLL_CHANNELS} channels"),
                            (["hall", longest + "x"], f"at most {DEFAULT_MAX_CHANNEL_NAME} characters")):
        response = send_raw(http.url, json.dumps(envelope({"channels": channels, "last": 0})))
        assert words in odoo_error(response.status_code, response.json(), INVALID_PARAMS)["data"]["message"]
    assert_serving(app, http)


def test_the_channel_limits_are_settings(make_app, serve):
    app = make_app(max_poll_channels=2, max_channel_name=4)
    url = serve(app).url
    with app.database.transaction() as tx:
        sendone(tx, "room", "test", "hello")
    assert payloads(poll(url, ["room", "abcd"], 0)) == ["hello"]
    for channels in (["room", "a", "b"], ["room", "abcde"]):
        response = send_raw(url, json.dumps(envelope({"channels": channels, "last": 0})))
        odoo_error(response.status_code, response.json(), INVALID_PARAMS)


def test_invalid_params_answer_carries_the_request_id(http):
    """JSON-RPC 2.0: only when the id cannot be read is the error's id null."""
    for params in ([], "channels", {"channels": 5}):
        response = send_raw(http.url, json.dumps(envelope(params)))
        odoo_error(response.status_code, response.json(), INVALID_PARAMS)
        assert response.json()["id"] == 7, params


def test_a_body_over_the_limit_with_content_length_is_refused(http, still_serving):
    body = json.dumps(envelope({"channels": ["x" * (MAX_BODY + 10)], "last": 0}))
    transport_error(send_raw(http.url, body), 413, 413)


def test_a_chunked_body_over_the_limit_is_refused(http, still_serving):
    def chunks():
        yield b'{"jsonrpc": "2.0", "method": "call", "params": {"channels": ["'
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536
        yield b'"], "last": 0}, "id": 1}'

    response = send_raw(http.url, chunks())
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    transport_error(response, 413, 413)


def test_a_chunked_body_under_the_limit_is_served(app, http):
    with app.database.transaction() as tx:
        sendone(tx, "room", "test", "chunked")

    def chunks():
        yield json.dumps(envelope({"channels": ["room"], "last": 0})).encode()

    response = send_raw(http.url, chunks())
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert payloads(response.json()["result"]) == ["chunked"]


def test_get_on_the_poll_route_is_method_not_allowed(http, still_serving):
    response = requests.get(http.url + POLL, timeout=10)
    assert response.status_code == 405
    assert "Traceback" not in response.text


def test_an_unknown_path_is_not_found(http, still_serving):
    for path in ("/nowhere", "/longpolling/pol", "/longpolling/poll/extra", "/mail/nothing"):
        response = requests.post(http.url + path, data=json.dumps(envelope({})), timeout=10)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text


class BrokenBus(BusApp):
    """A bus whose subscriptions hook has a bug."""

    def subscriptions(self, request, names, options):
        raise KeyError("a secret detail of the bug")


def test_a_bug_is_a_generic_server_error_as_odoo_sends_it(database_url, serve):
    app = BrokenBus(Settings(database_url=database_url, timeout=5.0))
    try:
        response = send_raw(serve(app).url, json.dumps(envelope({"channels": [], "last": 0})))
        error = odoo_error(response.status_code, response.json(), SERVER_ERROR)
        assert error["data"]["message"] == "internal server error"
        assert "secret" not in response.text and "KeyError" not in response.text
        assert response.json()["id"] == 7
    finally:
        app.close()
