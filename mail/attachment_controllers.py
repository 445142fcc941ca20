"""The routes of attachments, as Odoo 15 names them: upload and delete from
Discuss (``/mail/attachment/...``), download from the web client's
``/web/content`` and ``/web/image``. No SQL here.

The upload is a multipart form, not JSON-RPC, so it has its own body limit
(the attachment size plus room for the form around it) instead of the JSON
routes' ``max_body``, and answers JSON as Odoo's does: the attachment, or
``{"error": ...}`` (with a status saying which kind).
"""
from __future__ import annotations

import io
import json
import re
from typing import TYPE_CHECKING, Any, Optional

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from bus.jsonrpc import param

from . import attachments, channels, errors
from .controllers import route, translate

if TYPE_CHECKING:
    from .app import MailApp
    from .controllers import MailController
    from .sessions import Session

#: What a multipart form may add around the file: boundaries, headers, the
#: small fields.
FORM_OVERHEAD = 64 * 1024
#: A body declared too large is read and thrown away up to this many bytes,
#: so the client, still sending, gets to read the refusal; past it the
#: connection is closed instead.
DRAIN_LIMIT = 64 * 1024 * 1024
_DRAIN_CHUNK = 64 * 1024
_DOWNLOAD = re.compile(r"/web/(?:content|image)/(\d+)(?:/.*)?")

STATUS = {errors.NotFound: 404, errors.InvalidInput: 400, errors.Forbidden: 403}


def json_answer(value: dict, status: int = 200, *, close: bool = False) -> Response:
    response = Response(json.dumps(value), status, content_type="application/json")
    if close:
        response.headers["Connection"] = "close"
    return response


class AttachmentController:
    """Registered through the chat's :class:`MailController`, whose session
    checks and error translation the JSON route shares."""

    def __init__(self, app: MailApp, mail: MailController) -> None:
        self.app = app
        self.mail = mail
        self.database = app.database

    @route("/mail/attachment/upload", kind="http", methods=("POST",))
    def upload(self, request: Request) -> Response:
        """Odoo's fields: ``ufile``, ``thread_model``, ``thread_id``,
        ``is_pending``. Every upload here is pending until posted, whatever
        ``is_pending`` says: a file appears in a conversation only with a
        message."""
        if self.app.sessions.session(request) is None:
            # Before the form is read: an anonymous client must not make the
            # server spool megabytes only to be refused. The cookie's
            # signature says so without the database; the user is read below.
            return json_answer({"error": "log in to upload files"}, 403, close=True)
        limit = self.app.max_attachment_size + FORM_OVERHEAD
        declared = request.content_length
        if declared is not None and declared > limit:
            return self._refuse_large(request, declared)
        request.max_content_length = limit
        try:
            form, files = request.form, request.files
        except RequestEntityTooLarge:
            return self._refuse_large(request, None)
        except ClientDisconnected:
            return json_answer({"error": "the upload was cut short"}, 400, close=True)
        with self.database.transaction() as tx:
            user = self.mail._optional_user(tx, request)
            if user is None:
                return json_answer({"error": "log in to upload files"}, 403)
            ufile = files.get("ufile")
            thread_id = form.get("thread_id", "")
            if ufile is None or form.get("thread_model") != "mail.channel" or not thread_id.isdigit():
                return json_answer({"error": "send ufile, thread_model=mail.channel and thread_id"}, 400)
            try:
                channel = channels.member_channel(tx, int(thread_id), user.partner_id)
                data = attachments.read_limited(ufile.stream, self.app.max_attachment_size)
                return json_answer(attachments.create_pending(
                    tx, self.app.attachment_storage, channel, user.partner_id, ufile.filename or "",
                    ufile.mimetype, data))
            except attachments.TooLarge as error:
                return json_answer({"error": str(error)}, 413)
            except errors.ChatError as error:
                return json_answer({"error": str(error)}, translate(STATUS, error))

    def _refuse_large(self, request: Request, declared: Optional[int]) -> Response:
        if declared is not None and declared <= DRAIN_LIMIT:
            stream, left = request.stream, declared
            while left > 0:
                chunk = stream.read(min(left, _DRAIN_CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
        message = f"the file is over the {self.app.max_attachment_size} bytes an attachment may have"
        return json_answer({"error": message}, 413, close=True)

    @route("/mail/attachment/delete")
    def delete(self, request: Request, params: dict, session: Session) -> Any:
        attachment_id = param(params, "attachment_id", int, required=True)
        with self.database.transaction() as tx:
            user = self.mail._user(tx, session)
            attachments.delete_pending(tx, self.app.attachment_storage, attachment_id, user.partner_id)
        return None

    @route("/web/content/<int:attachment_id>", auth="public", kind="http")
    def content(self, request: Request) -> Response:
        return self._download(request, image=False)

    @route("/web/content/<int:attachment_id>/<path:filename>", auth="public", kind="http")
    def content_named(self, request: Request) -> Response:
        return self._download(request, image=False)

    @route("/web/image/<int:attachment_id>", auth="public", kind="http")
    def image(self, request: Request) -> Response:
        return self._download(request, image=True)

    @route("/web/image/<int:attachment_id>/<path:size>", auth="public", kind="http")
    def image_sized(self, request: Request) -> Response:
        return self._download(request, image=True)

    def _download(self, request: Request, *, image: bool) -> Response:
        """The file to members of its channel (to its uploader while
        pending). Only the image types a browser cannot run are ever shown
        inline; everything else is a download, sniffing off."""
        match = _DOWNLOAD.fullmatch(request.path)
        assert match is not None  # the route's own pattern
        with self.database.transaction() as tx:
            user = self.mail._optional_user(tx, request)
            if user is None:
                return Response("log in to download attachments", 403, content_type="text/plain")
            try:
                attachment = attachments.readable(tx, int(match.group(1)), user.partner_id)
                if image and not attachment.inline_image:
                    return Response("not an image", 404, content_type="text/plain")
                data = attachments.content(tx, self.app.attachment_storage, attachment)
            except errors.NotFound:
                return Response("no such attachment", 404, content_type="text/plain")
        download = request.args.get("download", "").lower() in ("1", "true")
        response = send_file(io.BytesIO(data), request.environ, mimetype=attachment.mimetype,
                             as_attachment=download or not attachment.inline_image,
                             download_name=attachment.name, etag=attachment.checksum, max_age=0)
        response.headers["Cache-Control"] = "private, no-cache"  # a member's file, never a shared cache's
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response
