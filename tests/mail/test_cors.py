"""On the chat, only the poll answers pages of other sites (a livechat widget
following a public channel by its uuid); the chat's own routes stay
same-origin: no preflight is answered, no answer is readable."""
import json

import requests

from tests.mail.support import channel_id, ok, query

WIDGET = "http://widget.example"
CHAT_ROUTES = ["/mail/message/post", "/mail/init_messaging", "/web/session/authenticate", "/longpolling/im_status"]


def preflight(url, path):
    return requests.options(url + path, timeout=10, headers={
        "Origin": WIDGET, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})


def cors_headers(response):
    return {name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")}


def test_a_widget_on_another_site_follows_a_public_channel(url, admin, database_url):
    general = channel_id(database_url, "general")
    general_uuid = query(database_url, "SELECT uuid FROM mail_channel WHERE id = %s", (general,))[0][0]
    assert preflight(url, "/longpolling/poll").headers["Access-Control-Allow-Origin"] == "*"

    posted = ok(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general, "post_data": {
        "body": "Hello, visitor", "message_type": "comment", "subtype_xmlid": "mail.mt_comment"}}, admin)
    heard, last = [], 0
    # Polls from the last id seen until the post is heard: a poll answers
    # with what it has (the welcome message) and the post may follow.
    while posted["id"] not in heard:
        body = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"channels": [general_uuid], "last": last}}
        # The visitor's browser sends no cookie of the chat: it polls anonymously.
        answer = requests.post(url + "/longpolling/poll", data=json.dumps(body), timeout=30,
                               headers={"Content-Type": "application/json", "Origin": WIDGET})
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers
        entries = answer.json()["result"]
        assert entries, "the poll timed out without hearing the post"
        heard += [n["message"]["payload"]["message"]["id"] for n in entries
                  if n["message"]["type"] == "mail.channel/new_message"]
        last = entries[-1]["id"]


def test_the_chat_routes_stay_same_origin(url, admin):
    for path in CHAT_ROUTES:
        refused = preflight(url, path)
        assert refused.status_code == 405, path
        assert cors_headers(refused) == {}, path
        answer = admin.post(url + path, data=json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {}}),
                            headers={"Content-Type": "application/json", "Origin": WIDGET}, timeout=10)
        assert cors_headers(answer) == {}, path
    page = requests.get(url + "/", headers={"Origin": WIDGET}, timeout=10)
    assert page.status_code == 200 and cors_headers(page) == {}
    assert preflight(url, "/longpolling/poll").status_code == 200
