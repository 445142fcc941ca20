"""Attachments over real HTTP and PostgreSQL: upload, post, download, delete."""

import threading

import psycopg2
import pytest
import requests

from mail.attachments import FILE_LOCK, MAX_PENDING
from tests.mail.support import call, channel_id, login, ok, park, poll_as, query, refused
from tests.raw_http import Connection, request
from tests.support import wait_for

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def upload(url, session, thread_id, name="notes.txt", data=b"hello", mimetype="text/plain"):
    return (session or requests).post(f"{url}/mail/attachment/upload",
                                      data={"thread_model": "mail.channel", "thread_id": str(thread_id),
                                            "is_pending": "true"},
                                      files={"ufile": (name, data, mimetype)}, timeout=30)


def post(url, session, thread_id, attachment_ids, body=""):
    return call(url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": thread_id,
                                            "post_data": {"body": body, "attachment_ids": attachment_ids}}, session)


def private_channel(url, session):
    return ok(url, "/mail/channel/create", {"name": "secret", "privacy": "private"}, session)["id"]


def stored(database_url):
    return query(database_url, "SELECT count(*) FROM ir_attachment")[0][0]


def test_member_uploads_posts_and_members_download(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    answer = upload(url, admin, general, "report.csv", b"a,b\n1,2\n", "text/csv")
    assert answer.status_code == 200, answer.text
    uploaded = answer.json()
    assert uploaded["name"] == uploaded["filename"] == "report.csv"
    assert uploaded["mimetype"] == "text/csv" and uploaded["size"] == 8
    # Pending: the uploader's only.
    assert demo.get(f"{url}/web/content/{uploaded['id']}").status_code == 404
    assert admin.get(f"{url}/web/content/{uploaded['id']}").content == b"a,b\n1,2\n"
    message = post(url, admin, general, [uploaded["id"]])["result"]
    [formatted] = message["attachment_ids"]
    assert {k: formatted[k] for k in ("id", "name", "filename", "mimetype")} == {
        "id": uploaded["id"], "name": "report.csv", "filename": "report.csv", "mimetype": "text/csv"}
    assert len(formatted["checksum"]) == 40
    history = ok(url, "/mail/channel/messages", {"channel_id": general}, demo)
    assert history[0]["attachment_ids"] == message["attachment_ids"]
    got = demo.get(f"{url}/web/content/{uploaded['id']}")
    assert got.status_code == 200 and got.content == b"a,b\n1,2\n"
    assert got.headers["Content-Type"].startswith("text/csv")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert got.headers["Cache-Control"].startswith("private")


def test_images_inline_html_never(url, admin, database_url):
    general = channel_id(database_url, "general")
    image = upload(url, admin, general, "dot.png", PNG, "image/png").json()
    page = upload(url, admin, general, "page.html", b"<script>alert(1)</script>", "text/html").json()
    post(url, admin, general, [image["id"], page["id"]])
    shown = admin.get(f"{url}/web/image/{image['id']}")
    assert shown.status_code == 200 and shown.content == PNG
    assert shown.headers["Content-Type"] == "image/png"
    assert shown.headers["Content-Disposition"].startswith("inline")
    html = admin.get(f"{url}/web/content/{page['id']}")
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert admin.get(f"{url}/web/image/{page['id']}").status_code == 404


def test_non_member_and_anonymous_cannot_upload(url, admin, demo, database_url):
    secret = private_channel(url, admin)
    answer = upload(url, demo, secret)
    assert answer.status_code == 404 and "error" in answer.json()
    anonymous = upload(url, None, secret)
    assert anonymous.status_code == 403 and "error" in anonymous.json()
    assert stored(database_url) == 0


def test_an_anonymous_upload_is_refused_before_its_body_is_read(mail_http, database_url):
    """The refusal comes while the client has sent a sliver of a 1 MB form:
    the server does not wait for (or spool) a body it will throw away."""
    connection = Connection(mail_http.port, timeout=10)
    try:
        connection.send(request(b"POST", b"/mail/attachment/upload", b"Host: 127.0.0.1",
                                b"Content-Type: multipart/form-data; boundary=x",
                                b"Content-Length: 1000000", body=b"--x\r\n"))
        answer = connection.read_answer()
    finally:
        connection.close()
    assert answer is not None and answer.status == 403
    assert answer.fields["connection"] == "close"
    assert stored(database_url) == 0


def test_non_member_and_anonymous_cannot_download(url, admin, demo, database_url):
    secret = private_channel(url, admin)
    uploaded = upload(url, admin, secret).json()
    post(url, admin, secret, [uploaded["id"]])
    assert admin.get(f"{url}/web/content/{uploaded['id']}").status_code == 200
    assert demo.get(f"{url}/web/content/{uploaded['id']}").status_code == 404
    assert requests.get(f"{url}/web/content/{uploaded['id']}", timeout=10).status_code == 403


def test_too_large_is_refused_and_the_server_keeps_serving(make_mail_app, serve, database_url):
    url = serve(make_mail_app(max_attachment_size=1000)).url
    admin = login(url, "admin")
    general = channel_id(database_url, "general")
    small = upload(url, admin, general, data=b"x" * 1000)
    assert small.status_code == 200
    for size in (1001, 200_000):  # past the file limit; past the whole form's
        answer = upload(url, admin, general, data=b"x" * size)
        assert answer.status_code == 413 and "error" in answer.json()
    assert stored(database_url) == 1
    assert ok(url, "/web/session/get_session_info", {}, admin)["uid"]


def test_folder_storage_names_files_by_checksum(make_mail_app, serve, database_url, tmp_path):
    url = serve(make_mail_app(attachment_dir=tmp_path)).url
    admin = login(url, "admin")
    general = channel_id(database_url, "general")
    uploaded = upload(url, admin, general, "../../etc/passwd", b"secret data", "text/plain").json()
    assert uploaded["name"] == "passwd"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [uploaded["checksum"]]
    assert files[0].read_bytes() == b"secret data"
    assert query(database_url, "SELECT db_datas FROM ir_attachment")[0][0] is None
    assert admin.get(f"{url}/web/content/{uploaded['id']}").content == b"secret data"
    ok(url, "/mail/attachment/delete", {"attachment_id": uploaded["id"]}, admin)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def stored_files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_uploads_waiting_to_be_posted_are_bounded_and_expire(url, admin, database_url):
    general = channel_id(database_url, "general")
    first = None
    for number in range(MAX_PENDING):
        answer = upload(url, admin, general, f"{number}.txt", b"x%d" % number)
        assert answer.status_code == 200, answer.text
        first = first or answer.json()
    refused_upload = upload(url, admin, general, "one too many.txt", b"y")
    assert refused_upload.status_code == 400 and "waiting" in refused_upload.json()["error"]
    post(url, admin, general, [first["id"]])  # posted: no longer waiting
    assert upload(url, admin, general, "now it fits.txt", b"z").status_code == 200
    # One never posted for a day goes with its uploader's next upload.
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cr:  # commits on leaving
            cr.execute("UPDATE ir_attachment SET create_date = create_date - interval '25 hours'"
                       " WHERE message_id IS NULL")
    finally:
        conn.close()
    assert upload(url, admin, general, "fresh.txt", b"w").status_code == 200
    assert query(database_url, "SELECT count(*) FROM ir_attachment WHERE message_id IS NULL") == [(1,)]
    assert stored(database_url) == 2


def test_a_file_missing_from_the_folder_is_not_found(make_mail_app, serve, database_url, tmp_path):
    url = serve(make_mail_app(attachment_dir=tmp_path)).url
    admin = login(url, "admin")
    uploaded = upload(url, admin, channel_id(database_url, "general"), "gone.txt", b"removed by hand").json()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            path.unlink()
    assert admin.get(f"{url}/web/content/{uploaded['id']}").status_code == 404


def test_a_shared_file_stays_until_its_last_attachment_goes(make_mail_app, serve, database_url, tmp_path):
    """Same bytes, one file: removing one attachment (pending, or with its
    message) keeps the file for the others."""
    url = serve(make_mail_app(attachment_dir=tmp_path)).url
    admin, demo = login(url, "admin"), login(url, "demo")
    general = channel_id(database_url, "general")
    first = upload(url, admin, general, "a.txt", b"same bytes").json()
    second = upload(url, demo, general, "b.txt", b"same bytes").json()
    message = post(url, demo, general, [second["id"]], "here")["result"]
    assert stored_files(tmp_path) == [first["checksum"]]
    ok(url, "/mail/attachment/delete", {"attachment_id": first["id"]}, admin)
    assert stored_files(tmp_path) == [first["checksum"]]
    assert demo.get(f"{url}/web/content/{second['id']}").content == b"same bytes"
    ok(url, "/mail/message/update_content", {"message_id": message["id"], "body": ""}, demo)
    assert stored_files(tmp_path) == []
    assert stored(database_url) == 0


def test_a_file_being_uploaded_again_is_not_removed_under_it(make_mail_app, serve, database_url, tmp_path):
    """An upload of the same bytes still in its transaction holds the file's
    lock: the removal waits for it, then sees its row and keeps the file."""
    url = serve(make_mail_app(attachment_dir=tmp_path)).url
    admin = login(url, "admin")
    general = channel_id(database_url, "general")
    first = upload(url, admin, general, "a.txt", b"contended").json()
    fname = query(database_url, "SELECT store_fname FROM ir_attachment WHERE id = %s", (first["id"],))[0][0]
    uploader = psycopg2.connect(database_url)
    try:
        with uploader.cursor() as cr:  # what a concurrent upload does before its COMMIT
            cr.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FILE_LOCK, fname))
            cr.execute("INSERT INTO ir_attachment (name, mimetype, checksum, file_size, store_fname, res_model,"
                       " res_id) VALUES ('b.txt', 'text/plain', %s, 9, %s, 'mail.channel', %s)",
                       (first["checksum"], fname, general))
        deleting = threading.Thread(
            target=lambda: ok(url, "/mail/attachment/delete", {"attachment_id": first["id"]}, admin))
        deleting.start()
        wait_for(lambda: query(database_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                             " AND NOT granted")[0][0] == 1, 10, "the removal waiting for the lock")
        uploader.commit()
        deleting.join(10)
        assert not deleting.is_alive()
    finally:
        uploader.close()
    assert stored_files(tmp_path) == [first["checksum"]]


def test_path_traversal_name_is_only_a_name(url, admin, database_url):
    general = channel_id(database_url, "general")
    uploaded = upload(url, admin, general, "../../../tmp/evil.txt", b"x").json()
    assert uploaded["name"] == "evil.txt"
    got = admin.get(f"{url}/web/content/{uploaded['id']}")
    assert got.headers["Content-Disposition"] == "attachment; filename=evil.txt"


def test_posting_someone_elses_or_another_channels_attachment_is_refused(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    theirs = upload(url, admin, general).json()
    refused(post(url, demo, general, [theirs["id"]], "mine now"), "odoo.exceptions.ValidationError")
    chat = ok(url, "/mail/channel/get_or_create_chat", {"partner_ids": [ok(url, "/web/session/get_session_info",
                                                                            {}, demo)["partner_id"]]}, admin)["id"]
    refused(post(url, admin, chat, [theirs["id"]]), "odoo.exceptions.ValidationError")
    assert query(database_url, "SELECT message_id FROM ir_attachment") == [(None,)]
    posted = post(url, admin, general, [theirs["id"]])["result"]
    refused(post(url, admin, general, [theirs["id"]]), "odoo.exceptions.ValidationError")
    assert posted["attachment_ids"][0]["id"] == theirs["id"]


def test_delete_only_own_pending(url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    mine = upload(url, admin, general).json()
    refused(call(url, "/mail/attachment/delete", {"attachment_id": mine["id"]}, demo), "werkzeug.exceptions.NotFound")
    posted = upload(url, admin, general).json()
    post(url, admin, general, [posted["id"]])
    refused(call(url, "/mail/attachment/delete", {"attachment_id": posted["id"]}, admin),
            "werkzeug.exceptions.NotFound")
    ok(url, "/mail/attachment/delete", {"attachment_id": mine["id"]}, admin)
    assert query(database_url, "SELECT id FROM ir_attachment") == [(posted["id"],)]


def test_a_parked_poller_receives_the_message_with_its_attachment(mail_app, url, admin, demo, database_url):
    general = channel_id(database_url, "general")
    parked = park(mail_app, url, demo, max(n["id"] for n in poll_as(url, demo)))
    uploaded = upload(url, admin, general, "dot.png", PNG, "image/png").json()
    message = post(url, admin, general, [uploaded["id"]])["result"]
    [note] = [n for n in parked.result(10) if n["message"]["type"] == "mail.channel/new_message"]
    assert note["message"]["payload"]["message"] == message
    assert [a["id"] for a in message["attachment_ids"]] == [uploaded["id"]]


@pytest.mark.parametrize("form", [{"thread_model": "res.partner", "thread_id": "1"}, {"thread_model": "mail.channel"}])
def test_bad_upload_form_is_refused(url, admin, database_url, form):
    answer = admin.post(f"{url}/mail/attachment/upload", data=form, files={"ufile": ("a", b"x")}, timeout=10)
    assert answer.status_code == 400 and "error" in answer.json()
    assert stored(database_url) == 0


@pytest.mark.parametrize("sent, kept", [("C:\\Users\\x\\a.pdf", "a.pdf"), ("../..", "file"), ("a\r\nb.txt", "ab.txt")])
def test_names_keep_only_the_last_segment_without_control_characters(sent, kept):
    from mail.attachments import clean_name
    assert clean_name(sent) == kept
