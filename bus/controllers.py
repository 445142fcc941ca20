"""The bus routes: translate HTTP into calls on the application, nothing more."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from .channels import array_parts
from .jsonrpc import InvalidParams, RawJSON, param

if TYPE_CHECKING:
    from .app import BusApp


def poll_channels(params: dict, max_channels: int, max_name: int) -> list[str]:
    """The channels a poll names: required, as by Odoo's ``poll(channels,
    last)``, strings only, and bounded in number and length."""
    channels = param(params, "channels", list, required=True)
    if len(channels) > max_channels:
        raise InvalidParams(f"a poll names at most {max_channels} channels")
    for name in channels:
        if type(name) is not str:
            raise InvalidParams("the bus only accepts string channels")
        if len(name) > max_name:
            raise InvalidParams(f"a channel name has at most {max_name} characters")
    return channels


def register(app: BusApp) -> None:
    max_channels, max_name = app.settings.max_poll_channels, app.settings.max_channel_name

    # Cross-origin, as Odoo's: a livechat widget on another site polls.
    @app.json_route("/longpolling/poll", cors=True)
    def poll(request: Request, params: dict) -> Any:
        channels = poll_channels(params, max_channels, max_name)
        last = param(params, "last", int, required=True)
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
        # Never cached, as Odoo's: a stored "pass" would vouch for a server gone since.
        return Response('{"status": "pass"}', mimetype="application/json", headers={"Cache-Control": "no-store"})
