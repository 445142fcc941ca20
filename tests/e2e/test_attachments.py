"""Attachments in a real browser: one person attaches an image and a file,
the other sees the preview and the link and downloads the file."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.chat import LIVE_MS, last_message
from tests.mail.support import query

pytestmark = pytest.mark.browser

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def test_attached_image_and_file_reach_the_other_person(login):
    admin = login("admin", "admin")
    demo = login("demo", "demo")
    admin.get_by_test_id("attach-input").set_input_files([
        {"name": "dot.png", "mimeType": "image/png", "buffer": PNG},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"minutes of the meeting"},
    ])
    chips = admin.get_by_test_id("pending-attachment")
    expect(chips).to_have_count(2)
    expect(admin.locator("[data-testid=pending-attachment][data-state=uploaded]")).to_have_count(2)
    admin.get_by_test_id("composer-input").fill("the files")
    admin.get_by_test_id("composer-input").press("Enter")
    expect(chips).to_have_count(0)

    received = last_message(demo)
    expect(received.get_by_test_id("message-body")).to_have_text("the files", timeout=LIVE_MS)
    image = received.get_by_test_id("attachment-image")
    expect(image).to_have_attribute("alt", "dot.png")
    demo.wait_for_function("img => img.complete && img.naturalWidth === 1", arg=image.element_handle())
    link = received.get_by_test_id("attachment-link")
    expect(link).to_have_text("notes.txt")
    with demo.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "notes.txt"
    with open(download.path(), "rb") as downloaded:
        assert downloaded.read() == b"minutes of the meeting"


def test_a_file_removed_while_uploading_is_never_stored(login, database_url):
    """The × on a chip whose upload is still going cancels it, and leaves
    the other uploads alone; a finished upload removed is deleted."""
    admin = login("admin", "admin")
    held = []

    def hold_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # the first upload waits here until released

    admin.route("**/mail/attachment/upload", hold_first)
    admin.get_by_test_id("attach-input").set_input_files([
        {"name": "slow.txt", "mimeType": "text/plain", "buffer": b"never stored"}])
    expect(admin.locator("[data-testid=pending-attachment][data-state=uploading]")).to_have_count(1)
    admin.get_by_test_id("attach-input").set_input_files([
        {"name": "kept.txt", "mimeType": "text/plain", "buffer": b"stored"},
        {"name": "dropped.txt", "mimeType": "text/plain", "buffer": b"deleted again"}])
    expect(admin.locator("[data-testid=pending-attachment][data-state=uploaded]")).to_have_count(2)
    admin.get_by_role("button", name="Remove slow.txt").click()
    admin.get_by_role("button", name="Remove dropped.txt").click()
    try:
        held[0].continue_()
    except Exception:  # noqa: BLE001 - the aborted request may already be gone
        pass
    expect(admin.get_by_test_id("pending-attachment")).to_have_text(["kept.txt×"])
    admin.get_by_test_id("composer-input").fill("one file")
    admin.get_by_test_id("composer-input").press("Enter")
    expect(last_message(admin).get_by_test_id("attachment-link")).to_have_text(["kept.txt"])
    names = query(database_url, "SELECT name FROM ir_attachment ORDER BY id")
    assert names == [("kept.txt",)]
