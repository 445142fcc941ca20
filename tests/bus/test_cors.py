"""Cross-origin polls, as Odoo 15 answers its ``cors="*"`` poll route: a page
on another site (a livechat widget) preflights ``/longpolling/poll`` and reads
the answers; routes that do not declare CORS stay same-origin.

Each request below is what Chromium sends for a ``fetch`` with a JSON body
from another origin: first ``OPTIONS`` with ``Access-Control-Request-*``,
then the ``POST`` with its ``Origin``.
"""
import json

import pytest
import requests

from bus import create_app, sendone
from tests.bus.test_servers import ServerProcess

POLL = "/longpolling/poll"
WIDGET = "http://widget.example"
OTHER = "http://other.example"


def preflight(url, path=POLL, origin=WIDGET, method="POST"):
    return requests.options(url + path, timeout=10, headers={
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type",
    })


def cross_origin_poll(url, channels, last, origin=WIDGET):
    body = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"channels": channels, "last": last}}
    return requests.post(url + POLL, data=json.dumps(body), timeout=30,
                         headers={"Content-Type": "application/json", "Origin": origin})


def cors_headers(response):
    return {name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")}


def post(app, channel, payload):
    with app.database.transaction() as tx:
        sendone(tx, channel, "test", payload)


def test_a_preflight_is_answered_as_odoo_does_without_running_the_poll(app, http):
    response = preflight(http.url)
    assert response.status_code == 200
    assert response.content == b""  # the poll did not run: no JSON-RPC answer
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    allowed = [name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")]
    assert "content-type" in allowed
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Vary" not in response.headers
    assert app.dispatcher.waiter_count == 0


def test_a_cross_origin_poll_is_readable_and_a_same_origin_one_is_left_alone(app, http):
    post(app, "livechat", "hello from the bus")
    response = cross_origin_poll(http.url, ["livechat"], 0)
    assert response.status_code == 200
    assert [e["message"]["payload"] for e in response.json()["result"]] == ["hello from the bus"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Access-Control-Allow-Credentials" not in response.headers

    # The page's own polls (a browser sends Origin on a same-origin POST
    # too) and origin-less clients get no CORS headers.
    same = cross_origin_poll(http.url, ["livechat"], 0, origin=http.url)
    plain = requests.post(http.url + POLL, timeout=30, data=json.dumps(
        {"jsonrpc": "2.0", "method": "call", "id": 2, "params": {"channels": ["livechat"], "last": 0}}))
    for answer in (same, plain):
        assert answer.status_code == 200 and len(answer.json()["result"]) == 1
        assert cors_headers(answer) == {}


def test_an_error_answer_is_readable_cross_origin_too(http):
    """A widget must be able to read why its poll was refused."""
    response = requests.post(http.url + POLL, data=b"not json", timeout=10,
                             headers={"Content-Type": "application/json", "Origin": WIDGET})
    assert response.json()["error"]["code"] == -32700
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_a_list_of_origins_echoes_the_caller_and_varies_on_it(make_app, serve):
    app = make_app(cors_origins=[WIDGET, OTHER])
    http = serve(app)
    last = 0
    for origin in (WIDGET, OTHER):
        response = preflight(http.url, origin=origin)
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Vary"] == "Origin"
        assert "Access-Control-Allow-Credentials" not in response.headers

        post(app, "livechat", origin)
        # From the last id seen: a poll answers with what it has, and the
        # dispatcher may not have heard of the new row yet.
        answer = cross_origin_poll(http.url, ["livechat"], last, origin=origin)
        entries = answer.json()["result"]
        assert [entry["message"]["payload"] for entry in entries] == [origin]
        last = entries[-1]["id"]
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert answer.headers["Vary"] == "Origin"
        assert "Access-Control-Allow-Credentials" not in answer.headers


def test_an_origin_not_listed_gets_no_cors_headers(make_app, serve):
    app = make_app(cors_origins=[WIDGET])
    http = serve(app)
    refused = preflight(http.url, origin="http://evil.example")
    assert refused.status_code == 403
    assert refused.content == b""
    assert cors_headers(refused) == {}
    assert app.dispatcher.waiter_count == 0

    # The poll itself runs (any client can send any Origin: CORS protects
    # the reader, not the server), but the browser is not let read it.
    post(app, "livechat", "not for you")
    answer = cross_origin_poll(http.url, ["livechat"], 0, origin="http://evil.example")
    assert answer.status_code == 200
    assert cors_headers(answer) == {}
    # A listed origin is still served, with a prefix or suffix not matching.
    assert preflight(http.url, origin=WIDGET).headers["Access-Control-Allow-Origin"] == WIDGET
    for near in (WIDGET + ".evil", WIDGET + ":8080", "https://widget.example"):
        assert cors_headers(preflight(http.url, origin=near)) == {}


def test_a_preflight_for_another_method_is_refused(app, http):
    for method in ("PUT", "DELETE", "GET"):
        response = preflight(http.url, method=method)
        assert response.status_code == 403, method
        assert cors_headers(response) == {}
    assert preflight(http.url).status_code == 200


def test_no_origin_is_allowed_when_the_list_is_empty(make_app, serve):
    app = make_app(cors_origins=[])
    http = serve(app)
    assert preflight(http.url).status_code == 403
    post(app, "livechat", "nobody may read this")
    assert cors_headers(cross_origin_poll(http.url, ["livechat"], 0)) == {}


def test_routes_that_do_not_declare_cors_stay_same_origin(app, http):
    response = preflight(http.url, path="/longpolling/health", method="GET")
    assert response.status_code == 405
    assert cors_headers(response) == {}
    health = requests.get(http.url + "/longpolling/health", headers={"Origin": WIDGET}, timeout=10)
    assert health.status_code == 200 and cors_headers(health) == {}
    assert preflight(http.url).headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("origins", [
    ["http://widget.example/"],  # a trailing slash never matches: browsers send none
    ["widget.example"],
    ["http://widget.example/chat"],
    ["https://widget.example:443"],
    ["HTTP://Widget.example"],
    ["null"],
    ["*", WIDGET],
])
def test_a_misspelt_origin_is_refused_at_start_up(database_url, origins):
    with pytest.raises(ValueError, match="origin"):
        create_app(database_url, cors_origins=origins)


@pytest.mark.slow
def test_the_command_line_passes_the_origins_through(database_url, tmp_path):
    server = ServerProcess("threaded", database_url, tmp_path, "--cors-origins", f"{WIDGET}, {OTHER}")
    try:
        for origin in (WIDGET, OTHER):
            assert preflight(server.url, origin=origin).headers["Access-Control-Allow-Origin"] == origin
        assert cors_headers(preflight(server.url, origin="http://evil.example")) == {}
    finally:
        assert server.terminate(10) == 0, server.log()
