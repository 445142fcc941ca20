"""/websocket over real sockets: the handshake, subscribes, what a
subscriber hears, the close codes, and a drain."""
import base64
import hashlib
import socket

import pytest
import requests

from bus import create_app, sendone
from bus.app import BusApp
from bus.config import Settings
from bus.embedded_postgres import EmbeddedPostgres
from bus.jsonrpc import InvalidParams, SessionExpired
from tests.support import ParkedPoll, create_database, poll, post, wait_for, wait_parked
from tests.ws_client import SocketClosed, WebSocketClient


def newest_id(app):
    with app.database.cursor() as cr:
        cr.execute("SELECT coalesce(max(id), 0) FROM bus_bus")
        return cr.fetchone()[0]



@pytest.fixture
def client(http):
    clients = []

    def connect(**options):
        ws = WebSocketClient(http.url, **options)
        clients.append(ws)
        return ws

    yield connect
    for ws in clients:
        ws.close()


def upgrade_headers(**extra):
    return {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(), **extra}


def raw_handshake(port, headers):
    """The server's answer head to an upgrade request, read off a raw socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"GET /websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        return head.split(b"\r\n\r\n")[0].decode()
    finally:
        sock.close()


def test_the_upgrade_answers_101_with_the_accept_token(http):
    head = raw_handshake(http.port, upgrade_headers())
    status, *lines = head.split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    key = base64.b64encode(b"0123456789abcdef")
    expected = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers["sec-websocket-accept"] == expected
    assert headers["upgrade"].lower() == "websocket" and headers["connection"].lower() == "upgrade"


def test_a_get_without_an_upgrade_is_426(http):
    response = requests.get(http.url + "/websocket", timeout=10)
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    versioned = requests.get(http.url + "/websocket", headers=upgrade_headers(**{"Sec-WebSocket-Version": "8"}),
                             timeout=10)
    assert versioned.status_code == 426 and versioned.headers["Sec-WebSocket-Version"] == "13"


def test_an_origin_not_allowed_is_403_and_an_allowed_one_opens(make_app, serve):
    http = serve(make_app(cors_origins="https://widget.example"))
    response = requests.get(http.url + "/websocket", headers=upgrade_headers(Origin="https://evil.example"),
                            timeout=10)
    assert response.status_code == 403
    WebSocketClient(http.url, origin="https://widget.example").close()
    WebSocketClient(http.url, origin=http.url).close()


def test_with_websockets_off_the_route_is_404_and_polls_go_on(make_app, serve):
    app = make_app(websocket=False)
    http = serve(app)
    response = requests.get(http.url + "/websocket", headers=upgrade_headers(), timeout=10)
    assert response.status_code == 404
    post(app, "general", {"n": 1})
    assert [n["message"]["payload"] for n in poll(http.url, ["general"], 0)] == [{"n": 1}]


def test_a_subscriber_hears_a_notification_as_one_array_frame(app, client):
    ws = client()
    ws.subscribe(["general"], 0)
    wait_parked(app)
    with app.database.transaction() as tx:
        sendone(tx, "general", "test", {"n": 1})
        sendone(tx, "general", "test", {"n": 2})
    post(app, "elsewhere", {"n": "not for it"})
    frame = ws.receive()
    first = newest_id(app) - 2
    assert frame == [{"id": first, "message": {"type": "test", "payload": {"n": 1}}},
                     {"id": first + 1, "message": {"type": "test", "payload": {"n": 2}}}]


def test_the_socket_follows_from_the_highest_id_sent_and_a_reconnect_from_its_last(app, client):
    ws = client()
    ws.subscribe(["general"], 0)
    wait_parked(app)
    post(app, "general", {"n": 1})
    heard = ws.receive()
    post(app, "general", {"n": 2})
    heard += ws.receive()
    ws.close()
    post(app, "general", {"n": 3})  # while no socket is open
    again = client()
    again.subscribe(["general"], heard[-1]["id"])
    heard += again.receive()
    post(app, "general", {"n": 4})
    heard += again.receive()
    assert [n["message"]["payload"]["n"] for n in heard] == [1, 2, 3, 4]
    assert [n["id"] for n in heard] == sorted({n["id"] for n in heard})


def test_nothing_is_delivered_before_the_first_subscribe(app, client):
    ws = client()
    post(app, "broadcast", {"n": "before"})
    ws.subscribe(["general"], newest_id(app))
    wait_parked(app)
    post(app, "general", {"n": "after"})
    assert [n["message"]["payload"] for n in ws.receive()] == [{"n": "after"}]


def test_a_resubscribe_takes_effect_at_once_while_the_round_is_parked(make_app, serve):
    app = make_app(timeout=60)
    http = serve(app)
    ws = WebSocketClient(http.url)
    try:
        ws.subscribe(["old"], 0)
        wait_parked(app)
        mark = newest_id(app)
        ws.subscribe(["new"], mark)
        # Without the interrupt the round would stay parked on "old" for a
        # minute, and nothing posted on "new" would wake it.
        post(app, "new", {"n": 1})
        assert [n["message"]["payload"] for n in ws.receive(timeout=10)] == [{"n": 1}]
        post(app, "old", {"n": "no longer heard"})
        post(app, "new", {"n": 2})
        assert [n["message"]["payload"] for n in ws.receive(timeout=10)] == [{"n": 2}]
    finally:
        ws.close()


def test_a_resubscribe_ends_only_its_own_round(make_app, serve):
    """The interrupt releases the event the round waits on, which the other
    polls of its channels share: they wake, find nothing and park again."""
    app = make_app(timeout=60)
    http = serve(app)
    ws, neighbour = WebSocketClient(http.url), WebSocketClient(http.url)
    try:
        parked = ParkedPoll(http.url, ["old"], 0)
        ws.subscribe(["old"], 0)
        neighbour.subscribe(["old"], 0)
        wait_parked(app, 3)
        ws.subscribe(["new"], newest_id(app))
        wait_for(lambda: any('"new"' in channel for channel in app.dispatcher.hub.channels()), 10,
                 "the round on the new channel")
        assert app.dispatcher.waiter_count == 3 and not parked.done.is_set()
        post(app, "old", {"n": 1})
        assert parked.result(10)[0]["message"]["payload"] == {"n": 1}
        assert neighbour.receive(10)[0]["message"]["payload"] == {"n": 1}
    finally:
        ws.close()
        neighbour.close()


@pytest.mark.parametrize("frame, reason", [
    ("not json", "JSON"),
    ('{"event_name": "unsubscribe", "data": {}}', "subscribe"),
    ('{"event_name": "subscribe", "data": {"channels": "general", "last": 0}}', "channels"),
    ('{"event_name": "subscribe", "data": {"channels": [], "last": true}}', "last"),
    ('{"event_name": "subscribe", "data": {"channels": [], "last": 0, "options": []}}', "options"),
])
def test_a_malformed_frame_closes_with_1003(client, frame, reason):
    ws = client()
    ws.send_text(frame)
    code, why = ws.close_code()
    assert code == 1003 and reason in why


def test_a_binary_frame_closes_with_1003(client):
    ws = client()
    ws.send_bytes(b"\x00\x01")
    assert ws.close_code()[0] == 1003


def test_invalid_parameters_close_with_1008(make_app, serve):
    http = serve(make_app(max_poll_channels=2))
    for channels, last, why in [(["a", "b", "c"], 0, "at most 2 channels"), (["a"], -1, "negative"),
                                ([["a", 1]], 0, "string channels"), (["a"], 0, "peek")]:
        ws = WebSocketClient(http.url)
        ws.subscribe(channels, last, **({"peek": True} if why == "peek" else {}))
        assert ws.close_code() == (1008, ws.closed.reason) and why in ws.closed.reason
        ws.close()


def test_a_message_over_max_body_closes_with_1009(make_app, serve):
    http = serve(make_app(max_body=1000))
    ws = WebSocketClient(http.url)
    ws.subscribe(["x" * 10] * 100, 0)
    assert ws.close_code()[0] == 1009
    ws.close()


def test_an_idle_socket_is_pinged_and_one_that_stops_answering_is_closed(make_app, serve):
    # Short enough for a quick test, long enough that the client answering
    # its pings never misses one on a loaded machine.
    app = make_app(websocket_ping=1.5)
    http = serve(app)
    ws = WebSocketClient(http.url)
    ws.subscribe(["general"], 0)
    wait_for(lambda: _pump(ws) >= 2, 20, "two pings answered")
    silent = socket.create_connection(("127.0.0.1", http.port), timeout=10)
    lines = "".join(f"{name}: {value}\r\n" for name, value in upgrade_headers().items())
    silent.sendall(f"GET /websocket HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    wait_for(lambda: _pump(ws) and len(app.sockets) == 2, 20, "the silent socket open")
    wait_for(lambda: _pump(ws) and len(app.sockets) == 1, 20, "the silent socket dropped")
    # The one left is the one that answers its pings.
    post(app, "general", {"n": 1})
    assert [n["message"]["payload"] for n in ws.receive()] == [{"n": 1}]
    silent.close()
    ws.close()


def _pump(ws):
    """Answer the server's pings for a moment; how many were answered so far."""
    try:
        ws.receive(timeout=0.1)
    except SocketClosed:
        raise
    except AssertionError:  # no frame within the moment
        pass
    return ws.pings_answered


def test_drain_closes_every_socket_with_1001_while_polls_were_served(app, http, client):
    sockets = [client() for _ in range(3)]
    for ws in sockets:
        ws.subscribe(["general"], 0)
    parked = ParkedPoll(http.url, ["general"], 0)
    wait_parked(app, 4)
    post(app, "general", {"n": 1})
    assert parked.result(10)[0]["message"]["payload"] == {"n": 1}
    assert all(ws.receive()[0]["message"]["payload"] == {"n": 1} for ws in sockets)
    app.drain()
    assert [ws.close_code()[0] for ws in sockets] == [1001] * 3
    wait_for(lambda: len(app.sockets) == 0, 10, "every socket closed")


def test_a_socket_and_long_polls_share_the_server(app, http, client):
    ws = client()
    ws.subscribe(["general"], 0)
    wait_parked(app)
    post(app, "general", {"n": 1})
    first = ws.receive()[0]
    # The socket's round parks again while HTTP polls come and go.
    assert poll(http.url, ["general"], first["id"] - 1)[0]["id"] == first["id"]
    post(app, "general", {"n": 2})
    assert ws.receive()[0]["message"]["payload"] == {"n": 2}


def test_a_server_without_takeover_refuses_rather_than_hangs(app):
    """An embedding server that cannot hand the socket over answers 501."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_port}/websocket", headers=upgrade_headers(),
                                timeout=10)
        assert response.status_code == 501
    finally:
        server.shutdown()
        server.server_close()


def test_json_of_frames_is_the_poll_answer(app, http, client):
    ws = client()
    ws.subscribe(["general"], 0)
    wait_parked(app)
    post(app, "general", {"text": "é ✓"})
    frame = ws.receive()
    assert frame == poll(http.url, ["general"], frame[0]["id"] - 1)


class Guarded(BusApp):
    """A poll hook that refuses callers, as an application's does."""

    def subscriptions(self, request, names, last, options):
        if request.cookies.get("session") == "expired":
            raise SessionExpired("session expired: log in again")
        if options.get("refuse"):
            raise InvalidParams("'refuse' is not an option")
        return super().subscriptions(request, names, last, options)


@pytest.mark.parametrize("cookie, options, code", [("session=expired", {}, 4001), (None, {"refuse": 1}, 1008)])
def test_the_poll_hooks_errors_close_the_socket(database_url, serve, cookie, options, code):
    app = Guarded(Settings(database_url=database_url, timeout=5.0))
    try:
        http = serve(app)
        ws = WebSocketClient(http.url, cookie=cookie)
        ws.subscribe(["general"], 0, **options)
        assert ws.close_code()[0] == code
        ws.close()
    finally:
        app.close()


def test_a_round_without_the_database_closes_with_1013(serve):
    cluster = EmbeddedPostgres(durable=False)
    cluster.start()
    app = None
    try:
        app = create_app(create_database(cluster.url(), "imbus_ws_down"), timeout=5)
        http = serve(app)
        assert poll(http.url, ["room"], 0, peek=True) == []  # the dispatcher is up
        cluster.stop()
        ws = WebSocketClient(http.url)
        ws.subscribe(["room"], 0)  # a first round reads the database
        assert ws.close_code()[0] == 1013
        ws.close()
    finally:
        if app is not None:
            app.close()
        cluster.destroy()
