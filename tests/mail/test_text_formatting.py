"""Plain text gets links, mentions and a little formatting, and none of it
opens a way around the sanitiser."""
import pytest

from mail.message_body import sanitize_body

LINK = 'target="_blank" rel="noopener noreferrer"'


@pytest.mark.parametrize("text, expected", [
    ("**bold**", "<strong>bold</strong>"),
    ("*italic* and _italic_", "<em>italic</em> and <em>italic</em>"),
    ("`a * b`", "<code>a * b</code>"),
    ("**bold _and italic_**", "<strong>bold <em>and italic</em></strong>"),
    ("2 * 3 * 4 and snake_case_name", "2 * 3 * 4 and snake_case_name"),
    ("** not bold **", "** not bold **"),
    ("see https://example.com/a_b_c*d*.", f'see <a href="https://example.com/a_b_c*d*" {LINK}>'
     "https://example.com/a_b_c*d*</a>."),
    ("(https://example.com/x?a=1&b=2)", f'(<a href="https://example.com/x?a=1&amp;b=2" {LINK}>'
     "https://example.com/x?a=1&amp;b=2</a>)"),
    ("`https://example.com`", "<code>https://example.com</code>"),
])
def test_plain_text_formatting(text, expected):
    assert sanitize_body(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
    ("javascript:alert(1)", "javascript:alert(1)"),
    ("**<script>alert(1)</script>**", "****"),
    ("*<img src=x onerror=alert(1)>*", '*<img src="x">*'),
    ('https://e.com/"onmouseover="alert(1)', f'<a href="https://e.com/" {LINK}>https://e.com/</a>'
     "\"onmouseover=\"alert(1)"),
    ("`a &amp; b > c` **&lt;b&gt;**", "<code>a &amp;amp; b &gt; c</code> <strong>&amp;lt;b&amp;gt;</strong>"),
])
def test_nothing_unsafe_gets_through(text, expected):
    clean = sanitize_body(text)
    assert clean == expected
    assert 'href="javascript' not in clean and "onerror" not in clean and "<script" not in clean


def test_mentions_of_given_partners_become_odoo_mention_links():
    clean = sanitize_body("hi @Marc Demo, not @Marc nor @Jane", mentions={7: "Marc Demo"})
    assert clean == ('hi <a class="o_mail_redirect" data-oe-id="7" data-oe-model="res.partner"'
                     f' href="/web#model=res.partner&amp;id=7" {LINK}>@Marc Demo</a>, not @Marc nor @Jane')


def test_a_mention_name_is_escaped():
    clean = sanitize_body('@Tom & "Jerry" hi', mentions={3: 'Tom & "Jerry"'})
    assert clean.endswith('>@Tom &amp; "Jerry"</a> hi') and 'data-oe-id="3"' in clean


def test_html_bodies_keep_mentions_but_no_other_class_or_data():
    body = ('<a class="o_mail_redirect evil" data-oe-id="3" data-oe-model="res.partner" data-x="y"'
            ' href="/web#model=res.partner&id=3" onclick="x()">@Marc</a><span class="o_mail_redirect">s</span>')
    assert sanitize_body(body, mentions={3: "Marc"}) == ('<a class="o_mail_redirect" data-oe-id="3" data-oe-model="res.partner"'
                                   f' href="/web#model=res.partner&amp;id=3" {LINK}>@Marc</a><span>s</span>')


def test_a_body_said_to_be_text_is_text_even_when_it_looks_like_html():
    assert sanitize_body("<b>**x**</b>", plain_text=True) == "&lt;b&gt;<strong>x</strong>&lt;/b&gt;"
