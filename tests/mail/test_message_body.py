"""Bodies are shown to others as HTML: nothing that runs may survive."""
import pytest

from mail.errors import InvalidInput
from mail.message_body import sanitize_body
from tests.mail.support import call, channel_id, error_name, login, query, refused
from tests.support import INVALID_PARAMS


@pytest.mark.parametrize("body, expected", [
    ("<p>hi</p><script>alert(1)</script>", "<p>hi</p>"),
    ('<img src="x" onerror="alert(1)">', '<img src="x">'),
    ('<a href="javascript:alert(1)">click</a>', '<a target="_blank" rel="noopener noreferrer">click</a>'),
    ('<a href="https://example.com" onclick="x()">site</a>',
     '<a href="https://example.com" target="_blank" rel="noopener noreferrer">site</a>'),
    ("<b>bold</b> <i>it</i>", "<b>bold</b> <i>it</i>"),
    ("<iframe src='https://evil'></iframe>text", "text"),
    ("<style>body{display:none}</style>x", "x"),
    ('<p style="background:url(javascript:x)">p</p>', "<p>p</p>"),
])
def test_html_is_cleaned(body, expected):
    assert sanitize_body(body) == expected


@pytest.mark.parametrize("body, expected", [
    ("a < b & c", "a &lt; b &amp; c"),
    ("line one\nline two\r\nline three", "line one<br>line two<br>line three"),
    ("<3 & >_<", "&lt;3 &amp; &gt;_&lt;"),
    ("  padded  ", "padded"),
])
def test_plain_text_is_escaped_and_keeps_line_breaks(body, expected):
    assert sanitize_body(body) == expected


@pytest.mark.parametrize("body", ["", "   \n ", "<script>alert(1)</script>", "<p> </p>", "<br><br>"])
def test_empty_bodies_are_refused(body):
    with pytest.raises(InvalidInput):
        sanitize_body(body)


def test_oversized_bodies_are_refused_before_parsing():
    sanitize_body("x" * 1000, max_bytes=1000)
    with pytest.raises(InvalidInput, match="over 1000 bytes"):
        sanitize_body("x" * 1001, max_bytes=1000)
    with pytest.raises(InvalidInput, match="over 1000 bytes"):
        sanitize_body("é" * 501, max_bytes=1000)  # counted in UTF-8 bytes


def post(url, session, thread_id, body):
    return call(url, "/mail/message/post",
                {"thread_model": "mail.channel", "thread_id": thread_id, "post_data": {"body": body}}, session)


def test_posted_bodies_are_stored_clean(url, admin, database_url):
    general = channel_id(database_url, "general")
    hostile = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"><a href="javascript:x">l</a>'
    message = post(url, admin, general, hostile)["result"]
    stored = query(database_url, "SELECT body FROM mail_message WHERE id = %s", (message["id"],))[0][0]
    for body in (message["body"], stored):
        assert "script" not in body and "onerror" not in body and "javascript" not in body
    assert post(url, admin, general, "1 < 2\nsee?")["result"]["body"] == "1 &lt; 2<br>see?"


def test_oversized_and_empty_posts_get_clear_errors(url, admin, database_url):
    general = channel_id(database_url, "general")
    before = query(database_url, "SELECT count(*) FROM mail_message")
    too_big = post(url, admin, general, "x" * (64 * 1024 + 1))
    assert refused(too_big, INVALID_PARAMS)["data"]["message"] == "the message body is over 65536 bytes"
    empty = post(url, admin, general, "<script>only</script>")
    refused(empty, INVALID_PARAMS)
    assert query(database_url, "SELECT count(*) FROM mail_message") == before


def test_the_body_limit_is_configurable(make_mail_app, serve, database_url):
    url = serve(make_mail_app(max_message_body=10)).url
    admin = login(url, "admin")
    general = channel_id(database_url, "general")
    assert "result" in post(url, admin, general, "0123456789")
    assert error_name(post(url, admin, general, "0123456789a")) == INVALID_PARAMS
