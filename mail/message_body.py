"""What a message body may contain once it is stored and shown to others.

Bodies are inserted in other people's pages as HTML, so everything that can
run code (scripts, event handler attributes, ``javascript:`` URLs) is removed
by nh3 before the body is ever written. Plain text is escaped instead, so that
``a < b`` stays text and line breaks survive, and given the little
formatting people type in chats (links, ``**bold**``, ``*italic*``,
``_italic_``, ```code```, ``@mentions``) as HTML that goes through the same
sanitiser: a client sending plain text gets them, and nothing a marker
produces can carry what nh3 would not let through anyway.
"""
from __future__ import annotations

import html
import re
from typing import Optional

import nh3

from .errors import InvalidInput

DEFAULT_MAX_BODY_BYTES = 64 * 1024

ALLOWED_TAGS = {
    "a", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "img",
    "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "u", "ul",
}
ALLOWED_ATTRIBUTES = {
    # A mention is Odoo's <a class="o_mail_redirect" data-oe-id=.. data-oe-model="res.partner">.
    # data-oe-id only with the ids of the post's mentions (see _clean).
    "a": {"href", "title", "data-oe-model"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
ALLOWED_CLASSES = {"a": {"o_mail_redirect"}}
#: Every link opens apart from the chat; with ``link_rel``, the opened page
#: cannot reach back into it.
SET_ATTRIBUTES = {"a": {"target": "_blank"}}
URL_SCHEMES = {"http", "https", "mailto"}

# Something that opens or closes an element, a comment or a doctype: the mark
# of a body meant as HTML. "a < b" or "<3" are text.
_LOOKS_LIKE_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9-]*|/[a-zA-Z]|!)")


# Markers of plain text. Each span starts and ends on a non-space, so
# "2 * 3 * 4" and "snake_case_name" stay as typed.
# Read on escaped text: a quote (``&quot;``, ``&#x27;``) ends a link.
_URL = re.compile(r"\bhttps?://(?:(?!&quot;|&#x27;)[^\s<>])+")
_URL_TRAILER = ".,;:!?)]}'\""
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_STAR_ITALIC = re.compile(r"(?<!\*)\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?!\*)")
_UNDERSCORE_ITALIC = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")


def sanitize_body(body: str, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                  mentions: Optional[dict[int, str]] = None, plain_text: bool = False) -> str:
    """The HTML to store for a posted body, or an error for an unusable one.

    The size is checked before sanitising, so a huge body costs no parsing.
    ``mentions`` (partner id to name) are the partners a plain-text body may
    mention as ``@Name``: only those become mention links. ``plain_text``
    says the body is text whatever it holds, so that a typed ``<b>`` shows
    as typed instead of being guessed to be markup.
    """
    if len(body.encode("utf-8")) > max_bytes:
        raise InvalidInput(f"the message body is over {max_bytes} bytes")
    # PostgreSQL text cannot hold NUL; it is never meaningful in a message.
    body = body.replace("\x00", "")
    source = body if not plain_text and _LOOKS_LIKE_HTML.search(body) else text_to_html(body, mentions or {})
    clean = _clean(source, mentions or {}).strip()
    if not has_content(clean):
        raise EmptyBody("the message body is empty")
    return clean


class EmptyBody(InvalidInput):
    """A body that shows nothing once sanitised."""


def _clean(source: str, mentions: dict[int, str]) -> str:
    # A mention link names a partner the post really mentions, or none: an
    # HTML body cannot mark someone as mentioned who was never notified.
    mention_ids = {str(partner_id) for partner_id in mentions}
    return nh3.clean(
        source,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        tag_attribute_values={"a": {"data-oe-id": mention_ids}},
        allowed_classes=ALLOWED_CLASSES,
        set_tag_attribute_values=SET_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
    )


def text_to_html(text: str, mentions: dict[int, str]) -> str:
    """Plain text as HTML: escaped, with line breaks, links, mentions and the
    formatting markers turned into tags. Not yet sanitised (the caller does).

    Links, code and mentions are set aside behind placeholders before the
    emphasis markers are read, so that ``*`` or ``_`` inside a URL or a code
    span stays as typed.
    """
    kept: list[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return f"\x00{len(kept) - 1}\x00"

    def link(match: re.Match) -> str:
        url = match.group(0)
        trailer = ""
        while url and url[-1] in _URL_TRAILER:
            url, trailer = url[:-1], url[-1] + trailer
        return keep(f'<a href="{url}">{url}</a>') + trailer

    escaped = html.escape(text.strip(), quote=True).replace("\r\n", "\n")
    escaped = _CODE.sub(lambda m: keep(f"<code>{m.group(1)}</code>"), escaped)
    escaped = _URL.sub(link, escaped)
    # Longest names first, so "@Marc Demo" is not taken for "@Marc".
    for partner_id, name in sorted(mentions.items(), key=lambda item: -len(item[1])):
        label = "@" + html.escape(name, quote=True)
        mention = (f'<a class="o_mail_redirect" data-oe-id="{partner_id}" data-oe-model="res.partner"'
                   f' href="/web#model=res.partner&amp;id={partner_id}">{label}</a>')
        escaped = re.sub(re.escape(label) + r"(?!\w)", keep(mention), escaped)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    escaped = _STAR_ITALIC.sub(r"<em>\1</em>", escaped)
    escaped = _UNDERSCORE_ITALIC.sub(r"<em>\1</em>", escaped)
    escaped = escaped.replace("\n", "<br>")
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], escaped)


def has_content(clean: str) -> bool:
    """Whether sanitised HTML shows anything: text, or an image."""
    if "<img" in clean:
        return True
    return bool(html.unescape(nh3.clean(clean, tags=set())).strip())


def preview(clean: str, length: int = 45) -> str:
    """The first words of a body as plain text, for replies (``parent_id``'s
    name in a formatted message).

    Plain text, entities decoded: ``a < b`` comes out as ``a < b``. Like
    every record name on the wire it is text, to be inserted with
    ``textContent`` and never rendered as HTML; escaping it here would show
    ``&lt;`` to clients that (rightly) treat names as text.
    """
    text = " ".join(html.unescape(nh3.clean(clean.replace("<br>", " "), tags=set())).split())
    return text if len(text) <= length else text[: length - 1] + "…"
