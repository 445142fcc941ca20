"""What the chat refuses to do, in its own terms.

The models raise these and know nothing of HTTP or JSON-RPC, so they can be
called from a script, the demo data or a test as they are; the routes
(``mail.controllers``) turn each into the error a client reads, in one place.
"""
from __future__ import annotations


class ChatError(Exception):
    """A request the chat will not carry out; the message is meant for the
    person who made it."""


class NotFound(ChatError):
    """A conversation the caller cannot see, whether it exists or not: a
    stranger must not tell "forbidden" from "does not exist"."""


class InvalidInput(ChatError):
    """A request that cannot be carried out as given: an empty or oversized
    body, an unknown partner, a chat asked to hold three people."""


class Forbidden(ChatError):
    """The caller is known to be refused, such as a login with a wrong password."""
