"""The README's screenshot scene: a reply under its parent, reactions and an
image attachment on one page, all rendered together as the other person sees
them. ``IMBUS_UPDATE_SCREENSHOT=1`` copies the picture to ``docs/``."""
from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.chat import send

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
SHOWN_MS = 10000


def gradient_png(width: int = 240, height: int = 140) -> bytes:
    """A small picture to attach, drawn here so the test needs no file."""
    rows = b"".join(
        b"\x00" + bytes(channel for x in range(width) for channel in (40 + x // 2, 90 + y, 200 - x // 3))
        for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def message(page, text):
    body = page.get_by_test_id("message-body").filter(has_text=text)
    return page.get_by_test_id("messages").get_by_test_id("message").filter(has=body)


def test_reply_reactions_and_attachment_render_together(login, artifacts):
    admin = login("admin", "admin")
    demo = login("demo", "demo")

    send(admin, "Release notes for **1.4** are up: https://example.com/notes")
    admin.get_by_test_id("attach-input").set_input_files(
        [{"name": "dashboard.png", "mimeType": "image/png", "buffer": gradient_png()}])
    expect(admin.locator("[data-testid=pending-attachment][data-state=uploaded]")).to_have_count(1)
    send(admin, "and the new dashboard")

    expect(message(demo, "new dashboard")).to_have_count(1, timeout=SHOWN_MS)
    for text, emoji in (("Release notes", "🎉"), ("new dashboard", "👍")):
        row = message(demo, text)
        row.hover()
        row.get_by_test_id("react").click()
        message(demo, text).get_by_test_id("emoji").filter(has_text=emoji).click()
        expect(message(admin, text).get_by_test_id("reaction")).to_have_text(f"{emoji}1", timeout=SHOWN_MS)

    row = message(admin, "Release notes")
    row.hover()
    row.get_by_test_id("reply").click()
    send(admin, "Shipping it Friday unless someone objects")

    reply = message(demo, "Shipping it Friday")
    expect(reply).to_contain_text("Release notes for 1.4", timeout=SHOWN_MS)
    image = message(demo, "new dashboard").get_by_test_id("attachment-image")
    demo.wait_for_function("img => img.complete && img.naturalWidth === 240", arg=image.element_handle())
    expect(message(demo, "new dashboard").get_by_test_id("reaction")).to_have_text("👍1")
    demo.mouse.move(0, 0)
    demo.screenshot(path=str(artifacts / "readme-scene.png"))
    if os.environ.get("IMBUS_UPDATE_SCREENSHOT"):
        shutil.copyfile(artifacts / "readme-scene.png", DOCS_SCREENSHOT)
