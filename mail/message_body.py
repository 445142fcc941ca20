"""What a message body may contain once it is stored and shown to others.

Bodies are inserted in other people's pages as HTML, so everything that can
run code (scripts, event handler attributes, ``javascript:`` URLs) is removed
by nh3 before the body is ever written. Plain text is escaped instead, so that
``a < b`` stays text and line breaks survive.
"""
from __future__ import annotations

import html
import re

import nh3

from .errors import InvalidInput

DEFAULT_MAX_BODY_BYTES = 64 * 1024

ALLOWED_TAGS = {
    "a", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "img",
    "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "u", "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "target"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
URL_SCHEMES = {"http", "https", "mailto"}

# Something that opens or closes an element, a comment or a doctype: the mark
# of a body meant as HTML. "a < b" or "<3" are text.
_LOOKS_LIKE_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9-]*|/[a-zA-Z]|!)")


def sanitize_body(body: str, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> str:
    """The HTML to store for a posted body, or an error for an unusable one.

    The size is checked before sanitising, so a huge body costs no parsing.
    """
    if len(body.encode("utf-8")) > max_bytes:
        raise InvalidInput(f"the message body is over {max_bytes} bytes")
    # PostgreSQL text cannot hold NUL; it is never meaningful in a message.
    body = body.replace("\x00", "")
    if _LOOKS_LIKE_HTML.search(body):
        clean = nh3.clean(
            body,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            link_rel="noopener noreferrer",
        ).strip()
    else:
        clean = html.escape(body.strip(), quote=False).replace("\r\n", "\n").replace("\n", "<br>")
    if not has_content(clean):
        raise InvalidInput("the message body is empty")
    return clean


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
