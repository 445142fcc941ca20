"""The bus routes: translate HTTP into calls on the application, nothing more."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import websocket
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


def poll_params(params: dict, max_channels: int, max_name: int) -> tuple[list[str], int, dict]:
    """A poll's ``channels``, ``last`` and ``options``, as a long-poll and a
    WebSocket's subscribe both name them."""
    channels = poll_channels(params, max_channels, max_name)
    last = param(params, "last", int, required=True)
    if last < 0:
        raise InvalidParams("'last' cannot be negative")
    return channels, last, param(params, "options", dict, {})


def register(app: BusApp) -> None:
    max_channels, max_name = app.settings.max_poll_channels, app.settings.max_channel_name

    # Cross-origin, as Odoo's: a livechat widget on another site polls.
    @app.json_route("/longpolling/poll", cors=True)
    def poll(request: Request, params: dict) -> Any:
        channels, last, options = poll_params(params, max_channels, max_name)
        # The poll may park for a minute: what it needs is read, so the
        # rest of the decoded request is released now (about 1 KiB each).
        params.clear()
        entries = app.poll(request, channels, last, options)
        return RawJSON(array_parts(entries))

    @app.http_route("/longpolling/health")
    def health(request: Request) -> Response:
        # Never cached, as Odoo's: a stored "pass" would vouch for a server gone since.
        return Response('{"status": "pass"}', mimetype="application/json", headers={"Cache-Control": "no-store"})

    if app.settings.websocket:
        @app.http_route("/websocket")
        def socket(request: Request) -> Any:
            try:
                accept = websocket.accept_token(request, app.cors)
            except websocket.HandshakeRefused as refusal:
                return Response(refusal.message, status=refusal.status, headers=refusal.headers)
            return websocket.serve(app, request, accept)
