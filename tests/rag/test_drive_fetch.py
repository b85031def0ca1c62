"""GoogleDriveSource.fetch against the Drive fake: exports, downloads, per-file failures."""

from __future__ import annotations

import io
from collections.abc import Iterator

import openpyxl
import pytest

from ragkeeper_rag.errors import FileSkipped
from ragkeeper_rag.sources.drive_content import DOCX, XLSX
from tests.rag.corpus import pdf_bytes
from tests.rag.drive_fake import DriveFake, by_id, make_source


@pytest.fixture
def fake() -> Iterator[DriveFake]:
    with DriveFake() as f:
        yield f


async def test_fetch_exports_native_files_and_downloads_others(fake: DriveFake) -> None:
    root = fake.add_folder("Docs", fake.root_id)
    doc = fake.add_doc("Guide", root, "# Guide\nStep one")
    sheet = fake.add_sheet(
        "Inventory", root, {"Laptops": [["model", "qty"], ["x1", 3]], "Phones": [["p", 1]]}
    )
    slides = fake.add_slides("Deck", root, "Title slide\nSecond slide")
    pdf = fake.add_file("report.pdf", root, pdf_bytes(["quarterly report"]))
    text = fake.add_file("notes.txt", root, "plain notes")
    source = make_source(fake, root)
    files = by_id(await source.scan(None))

    got_doc = await source.fetch(files[doc])
    got_sheet = await source.fetch(files[sheet])
    got_slides = await source.fetch(files[slides])
    got_pdf = await source.fetch(files[pdf])
    got_text = await source.fetch(files[text])
    await source.aclose()

    assert (got_doc.extension, got_doc.mime_type, got_doc.data) == (
        "md",
        "text/markdown",
        b"# Guide\nStep one",
    )
    assert (got_sheet.extension, got_sheet.mime_type) == ("xlsx", XLSX)
    book = openpyxl.load_workbook(io.BytesIO(got_sheet.data))
    assert book.sheetnames == ["Laptops", "Phones"]
    assert [c.value for c in book["Laptops"][2]] == ["x1", 3]
    assert (got_slides.extension, got_slides.data) == ("txt", b"Title slide\nSecond slide")
    assert got_pdf.extension == "pdf" and got_pdf.data.startswith(b"%PDF")
    assert (got_text.extension, got_text.data) == ("txt", b"plain notes")
    assert fake.calls["files.export"] == 3
    assert fake.calls["files.get_media"] == 2


async def test_doc_falls_back_to_docx_when_markdown_export_is_refused(fake: DriveFake) -> None:
    root = fake.add_folder("Docs", fake.root_id)
    doc = fake.add_doc("Legacy", root, "# Legacy\nold text")
    source = make_source(fake, root)
    files = by_id(await source.scan(None))
    fake.fail(1, 400, "badRequest", methods={"files.export"})
    got = await source.fetch(files[doc])
    await source.aclose()
    assert (got.extension, got.mime_type) == ("docx", DOCX)
    assert got.data.startswith(b"PK")  # a zip container


async def test_oversized_export_and_missing_file_are_skipped_not_fatal(fake: DriveFake) -> None:
    root = fake.add_folder("Docs", fake.root_id)
    big = fake.add_doc("Huge", root, "# Huge")
    gone = fake.add_file("gone.txt", root, "soon deleted")
    source = make_source(fake, root, max_file_bytes=1000)
    files = by_id(await source.scan(None))
    fake.set_export_size(big, 11 * 1024 * 1024)
    fake.delete(gone)
    with pytest.raises(FileSkipped, match="10 MB"):
        await source.fetch(files[big])
    with pytest.raises(FileSkipped, match="404"):
        await source.fetch(files[gone])
    await source.aclose()


async def test_file_above_size_limit_is_skipped_before_download(fake: DriveFake) -> None:
    root = fake.add_folder("Docs", fake.root_id)
    big = fake.add_file("big.txt", root, "x" * 5000)
    source = make_source(fake, root, max_file_bytes=1000)
    files = by_id(await source.scan(None))
    with pytest.raises(FileSkipped, match="RAG_MAX_FILE_BYTES"):
        await source.fetch(files[big])
    await source.aclose()
    assert fake.calls["files.get_media"] == 0


async def test_file_that_keeps_failing_is_skipped_after_retries(fake: DriveFake) -> None:
    root = fake.add_folder("Docs", fake.root_id)
    flaky = fake.add_file("flaky.txt", root, "x")
    source = make_source(fake, root)
    files = by_id(await source.scan(None))
    fake.fail(100, 500, "backendError", methods={"files.get_media"})
    with pytest.raises(FileSkipped, match="HTTP 500"):
        await source.fetch(files[flaky])
    await source.aclose()
    assert fake.calls["files.get_media"] == 6  # every attempt of the retry policy
