"""Mentions: a plain-text ``@Name`` of a partner in ``partner_ids`` is Odoo's mention link."""
from tests.mail.support import channel_id, ok, partner_id
from tests.mail.test_message_edit import post


def test_a_mentioned_partner_is_linked_and_others_stay_text(url, admin, database_url):
    demo = partner_id(database_url, "demo")
    message = post(url, admin, channel_id(database_url, "general"), "@Marc Demo and @Jane Peterson, look",
                   partner_ids=[demo])
    assert message["body"] == (
        f'<a class="o_mail_redirect" data-oe-id="{demo}" data-oe-model="res.partner"'
        f' href="/web#model=res.partner&amp;id={demo}" target="_blank" rel="noopener noreferrer">@Marc Demo</a>'
        " and @Jane Peterson, look")
    assert message["partner_ids"] == [demo]


def test_an_edit_keeps_the_mentions_of_the_post(url, admin, database_url):
    demo = partner_id(database_url, "demo")
    message = post(url, admin, channel_id(database_url, "general"), "@Marc Demo hi", partner_ids=[demo])
    edited = ok(url, "/mail/message/update_content", {"message_id": message["id"], "body": "@Marc Demo hello"}, admin)
    assert f'data-oe-id="{demo}"' in edited["body"] and edited["body"].endswith(">@Marc Demo</a> hello")


def test_the_web_page_plain_text_flag_keeps_typed_markup_as_text(url, admin, database_url):
    message = post(url, admin, channel_id(database_url, "general"), "<i>typed</i> *it*", plain_text=True)
    assert message["body"] == "&lt;i&gt;typed&lt;/i&gt; <em>it</em>"


def test_an_html_body_cannot_mark_someone_who_was_not_mentioned(url, admin, database_url):
    """Only partners in ``partner_ids`` were notified, so only they may be
    shown as mentioned: a hand-written mention link of anyone else loses its id."""
    demo, jane = partner_id(database_url, "demo"), partner_id(database_url, "jane")
    forged = (f'<p><a class="o_mail_redirect" data-oe-id="{jane}" data-oe-model="res.partner" href="#">@Jane</a>'
              f' <a class="o_mail_redirect" data-oe-id="{demo}" data-oe-model="res.partner" href="#">@Marc</a></p>')
    message = post(url, admin, channel_id(database_url, "general"), forged, partner_ids=[demo])
    assert f'data-oe-id="{demo}"' in message["body"]
    assert f'data-oe-id="{jane}"' not in message["body"]
    assert "@Jane" in message["body"]
