"""The bus routes: translate HTTP into calls on the application, nothing more."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from .channels import array_parts
from .jsonrpc import InvalidParams, RawJSON, param

if TYPE_CHECKING:
    from .app import BusApp


def register(app: "BusApp") -> None:
    # Cross-origin, as Odoo's: a livechat widget on another site polls.
    @app.json_route("/longpolling/poll", cors=True)
    def poll(request: Request, params: dict) -> Any:
        channels = param(params, "channels", list, [])
        if not all(isinstance(name, str) for name in channels):
            raise InvalidParams("the bus only accepts string channels")
        last = param(params, "last", int, 0)
        if last < 0:
            raise InvalidParams("'last' cannot be negative")
        options = param(params, "options", dict, {})
        # The poll may park for a minute: what it needs is read, so the
        # rest of the decoded request is released now (about 1 KiB each).
        params.clear()
        entries = app.poll(request, channels, last, options)
        return RawJSON(array_parts(entries))

    @app.http_route("/longpolling/health")
    def health(request: Request) -> Response:
        return Response('{"status": "pass"}', mimetype="application/json")
