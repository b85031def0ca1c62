"""Files attached to a chat message on the page, in a real browser (docs/agent.md, "Web chat
page" and "Files in the chat"): a DOCX chosen with the Attach button's file picker and a PNG
dropped onto the conversation are sent as base64, read by the server (python-docx, tesseract)
and answered from by the offline model, with the file cited as a source without a link; the
user message shows its files, also after a reload. Files over a limit or of a type the server
does not read are refused on the page before anything is sent; a file the server refuses
(422) keeps the question and the chosen files. With ATTACHMENTS_ENABLED=false the control is
not shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import FilePayload, JSHandle, Page, Request, expect

from tests.agent.conftest import RunningServer
from tests.rag.corpus import docx_bytes, image_bytes

from .test_web_chat import sign_in
from .web_support import NewPage, ask

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
DOCX_NAME = "kestrel-brief.docx"
FACT = "The Kestrel launch code is AMBER-42."
PNG_NAME = "backup-board.png"
BOARD = "The backup window opens at 02:00 on Sundays."
CHAT_ROUTE = "/api/pydantic-agent"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
async def server(start_server: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    async with start_server() as running:
        yield running


def kestrel_docx() -> bytes:
    return docx_bytes("Kestrel brief", ["Notes for the spring release of the Kestrel.", FACT])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(request: Request) -> dict[str, Any]:
    """The JSON body the page sent."""
    sent: dict[str, Any] = json.loads(request.post_data or "{}")
    return sent


def chat_requests(page: Page) -> list[Request]:
    """Records every request the page sends to the chat route from now on."""
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith(CHAT_ROUTE) else None)
    return sent


async def choose(page: Page, *files: tuple[str, str, bytes]) -> None:
    """Click Attach and pick ``files`` (name, MIME type, bytes) in the file picker it opens."""
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Attach files").click()
    payloads = [FilePayload(name=name, mimeType=mime, buffer=data) for name, mime, data in files]
    await (await chooser.value).set_files(files=payloads)


async def dragged_files(page: Page, *files: tuple[str, str, bytes]) -> JSHandle:
    """A DataTransfer holding ``files``, as a drag from the desktop carries them."""
    return await page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, type, data] of files) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type }));
            }
            return transfer;
        }""",
        [[name, mime, b64(data)] for name, mime, data in files],
    )


async def signed_in(new_page: NewPage, server: RunningServer, sub: str) -> Page:
    """A watched page, signed in as ``sub``, showing the chat."""
    page, _ = await new_page()
    await sign_in(page, server.base_url, sub)
    return page


async def screenshot(page: Page, name: str) -> None:
    """For a look at the control (test-artifacts/ is gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def test_a_docx_from_the_file_picker_is_answered_from_and_shown_after_a_reload(
    new_page: NewPage, server: RunningServer
) -> None:
    page = await signed_in(new_page, server, "attach-dora")
    limits = page.locator("#attach-limits")
    await expect(limits).to_have_text(
        "Attach up to 5 files, 5 MB each, 10 MB in all: CSV, DOCX, HTML, MD, PDF, TSV, TXT, "
        "XLSX; images (JPEG, PNG, WebP)."
    )
    attach = page.get_by_role("button", name="Attach files")
    await expect(attach).to_have_attribute("aria-describedby", "attach-limits")
    accept = await page.locator("#attach-input").get_attribute("accept") or ""
    assert {".docx", ".pdf", ".png"} <= set(accept.split(",")), accept

    docx = kestrel_docx()
    await choose(page, (DOCX_NAME, DOCX_MIME, docx))
    chips = page.locator("#attachment-chips li")
    await expect(chips).to_have_count(1)
    await expect(chips.locator(".chip-name")).to_have_text([DOCX_NAME])
    await expect(page.get_by_role("button", name=f"Remove {DOCX_NAME}")).to_be_visible()
    await expect(page.locator("#attach-status")).to_have_text("1 file attached.")
    await screenshot(page, "chat-attach-chosen")

    sent = chat_requests(page)
    await ask(page, "What is the Kestrel launch code?")
    [request] = sent
    assert body(request)["files"] == [
        {"fileName": DOCX_NAME, "content": b64(docx), "mimeType": DOCX_MIME}
    ]
    answer = page.locator(".message.assistant").last
    await expect(answer.locator(".content")).to_contain_text("AMBER-42")
    cited = answer.locator(".sources li.source.attachment")
    await expect(cited.locator(".source-title")).to_have_text([DOCX_NAME])
    await expect(cited.locator(".source-kind")).to_have_text(["attached file"])
    await expect(cited.locator("a")).to_have_count(0)  # no URL: the title is not a link
    await expect(cited.locator(".passages")).to_contain_text("AMBER-42")
    # Sent and answered: the chips are gone, the question shows what it carried.
    await expect(chips).to_have_count(0)
    await expect(page.locator("#attachment-chips")).to_be_hidden()
    await expect(page.locator(".message.user .message-files .file-name")).to_have_text([DOCX_NAME])

    await screenshot(page, "chat-attach-answered")

    # A follow-up without files: nothing attached to it.
    await ask(page, "How many days of paid annual leave do we get?")
    assert "files" not in body(sent[1])

    await page.reload()
    users = page.locator(".message.user")
    await expect(users).to_have_count(2)
    await expect(users.nth(0).locator(".message-files .file-name")).to_have_text([DOCX_NAME])
    await expect(users.nth(1).locator(".message-files")).to_have_count(0)
    reopened = page.locator(".message.assistant").first
    await expect(reopened.locator(".content")).to_contain_text("AMBER-42")
    # Its sources come back too: the file's passage, from the turn's stored instructions.
    await expect(reopened.locator(".sources li.attachment .source-title")).to_have_text([DOCX_NAME])
    await expect(reopened.locator(".sources li.attachment .passages")).to_contain_text("AMBER-42")
    assert "sources" not in (await reopened.locator(".content").inner_text()).casefold()


async def test_a_png_dropped_on_the_conversation_is_read_by_ocr(
    new_page: NewPage, server: RunningServer
) -> None:
    page = await signed_in(new_page, server, "attach-otto")
    zone = page.locator("#conversation")
    hint = page.locator(".drop-hint")
    await expect(hint).to_be_hidden()
    png = image_bytes([BOARD])
    transfer = await dragged_files(page, (PNG_NAME, "image/png", png))

    # Dragging over the conversation (its children too) lights the drop zone up ...
    await page.locator("#messages").dispatch_event("dragenter", {"dataTransfer": transfer})
    await expect(zone).to_have_attribute("data-dropping", "true")
    await expect(hint).to_be_visible()
    await expect(hint).to_have_text("Drop files to attach them")
    await screenshot(page, "chat-attach-drop")
    # ... leaving it puts it out, and nothing is attached.
    await page.locator("#messages").dispatch_event("dragleave", {"dataTransfer": transfer})
    await expect(hint).to_be_hidden()
    await expect(page.locator("#attachment-chips li")).to_have_count(0)
    # Text dragged over it is not a file: no drop state.
    text = await page.evaluate_handle(
        "() => { const t = new DataTransfer(); t.setData('text/plain', 'hi'); return t; }"
    )
    await zone.dispatch_event("dragenter", {"dataTransfer": text})
    await expect(zone).not_to_have_attribute("data-dropping", "true")

    await page.locator("#prompt").dispatch_event("dragenter", {"dataTransfer": transfer})
    await expect(hint).to_be_visible()
    await page.locator("#prompt").dispatch_event("drop", {"dataTransfer": transfer})
    await expect(hint).to_be_hidden()
    await expect(page.locator("#attachment-chips .chip-name")).to_have_text([PNG_NAME])
    await expect(page.locator("#prompt")).to_be_focused()

    sent = chat_requests(page)
    await ask(page, "When does the backup window open?")
    assert [f["fileName"] for f in body(sent[0])["files"]] == [PNG_NAME]
    assert body(sent[0])["files"][0]["content"] == b64(png)
    answer = page.locator(".message.assistant").last
    await expect(answer.locator(".content")).to_contain_text("02:00")
    await expect(answer.locator(".content")).to_contain_text("backup window")
    await expect(answer.locator(".sources li.attachment .source-title")).to_have_text([PNG_NAME])
    await expect(page.locator(".message.user .message-files .file-name")).to_have_text([PNG_NAME])


async def test_files_over_the_limits_or_of_other_types_are_refused_on_the_page(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server(
        max_attachment_bytes=2048, max_message_attachment_bytes=3072
    ) as limited:
        page = await signed_in(new_page, limited, "attach-lim")
        sent = chat_requests(page)
        await expect(page.locator("#attach-limits")).to_contain_text("2 KB each, 3 KB in all")
        chips = page.locator("#attachment-chips li")
        notice = page.locator("#notice")

        await choose(page, ("big-notes.txt", "text/plain", b"x" * 3000))
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text(
            "Not attached: big-notes.txt is 2.9 KB, over the limit of 2 KB per file."
        )
        await expect(chips).to_have_count(0)

        await choose(page, ("setup.exe", "application/x-msdownload", b"MZ\x90\x00"))
        await expect(notice).to_contain_text(
            "setup.exe is not a file type that can be attached (CSV, DOCX,"
        )
        await expect(chips).to_have_count(0)

        # Within the per-file limit, but two together pass the per-message one.
        await choose(
            page, ("one.txt", "text/plain", b"a" * 2000), ("two.txt", "text/plain", b"b" * 2000)
        )
        await expect(notice).to_contain_text(
            "two.txt would bring the files to 3.9 KB, over the limit of 3 KB per message."
        )
        await expect(chips.locator(".chip-name")).to_have_text(["one.txt"])
        # Six small files: five fit, the sixth is one too many.
        await page.get_by_role("button", name="Remove one.txt").click()
        await expect(chips).to_have_count(0)
        await expect(page.get_by_role("button", name="Attach files")).to_be_focused()
        await choose(page, *((f"n{i}.txt", "text/plain", b"note") for i in range(6)))
        await expect(notice).to_contain_text("n5.txt would be one file too many")
        await expect(chips).to_have_count(5)

        # The chips work from the keyboard: Enter on a Remove button, focus moves on.
        remove = page.get_by_role("button", name="Remove n0.txt")
        await remove.focus()
        await page.keyboard.press("Enter")
        await expect(chips).to_have_count(4)
        await expect(page.get_by_role("button", name="Remove n1.txt")).to_be_focused()
        await expect(page.locator("#attach-status")).to_have_text("n0.txt removed.")
        assert sent == [], "nothing is sent until the user sends"


async def test_a_file_the_server_refuses_keeps_the_question_and_the_files(
    new_page: NewPage, server: RunningServer
) -> None:
    page = await signed_in(new_page, server, "attach-rex")
    await choose(page, ("broken.docx", DOCX_MIME, b"PK\x03\x04 not a zip at all"))
    sent = chat_requests(page)
    question = "What does the broken file say?"
    await page.locator("#prompt").fill(question)
    await page.locator("#prompt").press("Enter")
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("The server did not accept the message:")
    await expect(notice).to_contain_text("'broken.docx' could not be read")
    assert len(sent) == 1
    response = await sent[0].response()
    assert response is not None and response.status == 422
    # Nothing is lost: the question is back in the box, the file still attached.
    await expect(page.locator("#prompt")).to_have_value(question)
    await expect(page.locator("#attachment-chips .chip-name")).to_have_text(["broken.docx"])
    await expect(page.locator(".message")).to_have_count(0)
    await expect(page.locator("#send")).to_be_visible()

    # Replaced by a readable file, the same question goes through.
    await page.get_by_role("button", name="Remove broken.docx").click()
    await choose(page, (DOCX_NAME, DOCX_MIME, kestrel_docx()))
    await ask(page, "What is the Kestrel launch code?")
    await expect(page.locator(".message.assistant .content").last).to_contain_text("AMBER-42")
    await expect(page.locator("#notice")).to_be_hidden()
    assert body(sent[1])["files"][0]["fileName"] == DOCX_NAME


async def test_the_control_is_hidden_when_attachments_are_off(
    new_page: NewPage, start_server: Callable[..., Any]
) -> None:
    async with start_server(attachments_enabled=False) as off:
        page = await signed_in(new_page, off, "attach-off")
        await expect(page.locator("#prompt")).to_be_visible()
        await expect(page.get_by_role("button", name="Attach files")).to_have_count(0)
        await expect(page.locator("#attach-limits")).to_be_hidden()
        await expect(page.locator("#attachment-chips")).to_be_hidden()
        transfer = await dragged_files(page, ("notes.txt", "text/plain", b"hello"))
        zone = page.locator("#conversation")
        await zone.dispatch_event("dragenter", {"dataTransfer": transfer})
        await zone.dispatch_event("drop", {"dataTransfer": transfer})
        await expect(zone).not_to_have_attribute("data-dropping", "true")
        await expect(page.locator("#attachment-chips li")).to_have_count(0)
