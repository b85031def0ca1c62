"""Images and scanned PDFs: OCR'd at extraction, cited by page, bounded, and searchable.

tesseract is installed by ``make setup`` (scripts/install-tools.sh). The extraction tests call
``extract``/``extract_file`` as the workers (and the agent's chat attachments) do; the job
tests run the real ingestion job on a folder and on the Drive fake, then search the knowledge
store the agent searches.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding import EmbeddingConfig, create_embedder
from ragkeeper_knowledge.extraction import (
    ExtractionError,
    ExtractionLimits,
    LimitExceeded,
    Section,
    extract,
    extract_file,
    ocr,
)
from tests.agent.conftest import auth, serve, settings_for
from tests.rag.corpus import image_bytes, pdf_bytes, scanned_pdf_bytes
from tests.rag.drive_fake import DriveFake
from tests.rag.test_cli import job_env, run_job
from tests.rag.test_drive_sync import drive_job

BACKUP = "The backup policy keeps nightly snapshots for 35 days and monthly archives."
VISITORS = "Visitors sign in at the front desk and wear a badge at all times."
LEAVE = "Annual leave is 25 days per calendar year."


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_an_image_is_one_ocr_section(fmt: str, mime: str) -> None:
    [section] = extract_file(image_bytes([BACKUP]), mime)
    assert words(section.text) == BACKUP
    assert (section.page, section.ocr) == (None, True)


def test_a_scanned_page_is_ocrd_and_a_text_page_is_read(tmp_path: Path) -> None:
    writer = PdfWriter()
    for data in (pdf_bytes([LEAVE]), scanned_pdf_bytes([BACKUP])):
        writer.append(PdfReader(io.BytesIO(data)))
    path = tmp_path / "mixed.pdf"
    with path.open("wb") as out:
        writer.write(out)
    sections = extract_file(path, "application/pdf")
    assert [(s.page, s.ocr) for s in sections] == [(1, False), (2, True)]
    assert words(sections[0].text) == LEAVE
    assert words(sections[1].text) == BACKUP
    extracted = extract(path.read_bytes(), "pdf")
    assert extracted.page_at(extracted.text.index("nightly")).number == 2


def test_ocr_off_refuses_images_and_leaves_scanned_pages_empty() -> None:
    off = ExtractionLimits(ocr_enabled=False)
    with pytest.raises(ExtractionError, match=r"OCR is off \(RAG_OCR_ENABLED=false\)"):
        extract(image_bytes([BACKUP]), "png", off)
    assert extract(scanned_pdf_bytes([BACKUP]), "pdf", off).text == ""
    assert extract_file(b"# Notes\n\nplain text", "text/markdown", off) == [
        Section("# Notes\n\nplain text", None, ocr=False)
    ]


def test_no_tesseract_is_a_clear_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "TESSERACT", "tesseract-not-installed")
    for data, extension in ((image_bytes([BACKUP]), "png"), (scanned_pdf_bytes([BACKUP]), "pdf")):
        with pytest.raises(ExtractionError, match="OCR unavailable: the tesseract program"):
            extract(data, extension)


def bomb_png(side: int = 20_000) -> bytes:
    out = io.BytesIO()
    Image.new("1", (side, side), 1).save(out, format="PNG")  # 400 Mpx in ~90 KB
    return out.getvalue()


def huge_scanned_pdf() -> bytes:
    """A PDF page whose image declares 9999x9999 pixels (decoded, it would take 300 MB)."""
    out = io.BytesIO()
    Image.new("L", (1000, 1000), 255).save(out, format="PDF")
    return (
        out.getvalue()
        .replace(b"/Width 1000", b"/Width 9999")
        .replace(b"/Height 1000", b"/Height 9999")
    )


def test_pathological_images_are_refused_with_a_reason() -> None:
    with pytest.raises(LimitExceeded, match="RAG_OCR_MAX_PIXELS"):
        extract(bomb_png(), "png")
    with pytest.raises(
        LimitExceeded, match=r"image of 3000x2000 pixels \(over RAG_OCR_MAX_PIXELS=1000000\)"
    ):
        extract(_blank("PNG", 3000, 2000), "png", ExtractionLimits(ocr_max_pixels=1_000_000))
    jpeg = image_bytes([BACKUP], "JPEG")
    with pytest.raises(ExtractionError, match="unreadable image: OSError: image file is truncated"):
        extract(jpeg[: len(jpeg) // 2], "jpg")
    with pytest.raises(ExtractionError, match="not a PNG, JPEG or WebP image"):
        extract(b"GIF89a not really", "png")
    with pytest.raises(LimitExceeded, match=r"image of 9999x9999 pixels"):
        extract(huge_scanned_pdf(), "pdf")


def _blank(fmt: str, width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 255).save(out, format=fmt)
    return out.getvalue()


async def search(database_url: str, query: str, pipeline_id: str) -> list:
    pool = await create_pool(database_url, max_size=2)
    try:
        embedder = create_embedder(EmbeddingConfig(provider="hashing"))
        [vector] = await embedder.embed([query])
        return await KnowledgeStore(pool).search(query, vector, k=3, pipeline_id=pipeline_id)
    finally:
        await pool.close()


async def test_the_job_ingests_images_and_scanned_pdfs_and_search_cites_them(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "whiteboard.png").write_bytes(image_bytes([VISITORS]))
    (folder / "scan.pdf").write_bytes(scanned_pdf_bytes([BACKUP]))
    (folder / "notes.md").write_text(f"# Leave\n\n{LEAVE}\n")
    (folder / "bomb.png").write_bytes(bomb_png())
    jpeg = image_bytes([VISITORS], "JPEG")
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    env = job_env(
        database_url, tmp_path, RAG_PIPELINE_ID="ocr/job", RAG_WATCH_DIRECTORY=str(folder)
    )

    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["status"] == "partial"
    assert stats["files_added"] == 3
    errors = {e["file"]: e["error"] for e in stats["errors"]}
    assert "RAG_OCR_MAX_PIXELS" in errors["bomb.png"]
    assert "truncated" in errors["cut.jpg"]

    [hit, *_] = await search(database_url, "nightly snapshots backup policy", "ocr/job")
    assert hit.metadata["source"] == "scan.pdf"
    assert (hit.metadata["page"], hit.metadata["ocr"]) == (1, True)
    assert "nightly snapshots" in hit.content
    [hit, *_] = await search(database_url, "visitors badge front desk", "ocr/job")
    assert hit.metadata["source"] == "whiteboard.png"
    assert hit.metadata["ocr"] is True and "page" not in hit.metadata
    assert hit.metadata["mime_type"] == "image/png"

    # The agent's /api/search finds both, cited by their file.
    agent = settings_for(database_url, embedding=EmbeddingConfig(provider="hashing"))
    async with serve(agent) as running, running.client() as client:
        for query, source in (
            ("nightly snapshots backup policy", "scan.pdf"),
            ("visitors badge front desk", "whiteboard.png"),
        ):
            r = await client.post(
                "/api/search",
                json={"query": query, "k": 1, "pipeline_id": "ocr/job"},
                headers=auth("ocr-reader"),
            )
            assert r.status_code == 200, r.text
            [found] = r.json()
            assert found["document_id"] == f"ocr/job:{source}", found

    code, again, stderr = run_job(env)
    assert code == 0, stderr
    assert (again["chunks_embedded"], again["files_unchanged"]) == (0, 3)


async def test_ocr_off_reports_images_and_turning_it_on_reads_stored_scans(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "whiteboard.png").write_bytes(image_bytes([VISITORS]))
    (folder / "scan.pdf").write_bytes(scanned_pdf_bytes([BACKUP]))
    (folder / "notes.md").write_text(f"# Leave\n\n{LEAVE}\n")
    env = job_env(
        database_url, tmp_path, RAG_PIPELINE_ID="ocr/off", RAG_WATCH_DIRECTORY=str(folder)
    )
    code, stats, stderr = run_job({**env, "RAG_OCR_ENABLED": "false"})
    assert code == 0, stderr
    assert stats["files_added"] == 2  # the scan is stored with no text, as before OCR
    assert stats["errors"] == [
        {"file": "whiteboard.png", "error": "image not indexed: OCR is off (RAG_OCR_ENABLED=false)"}
    ]
    hits = await search(database_url, "nightly snapshots backup policy", "ocr/off")
    assert all(hit.metadata["source"] != "scan.pdf" for hit in hits)

    code, stats, stderr = run_job(env)  # OCR on: the stored scan is read again, once
    assert code == 0, stderr
    assert (stats["status"], stats["files_added"], stats["files_updated"]) == ("success", 1, 1)
    [hit, *_] = await search(database_url, "nightly snapshots backup policy", "ocr/off")
    assert (hit.metadata["source"], hit.metadata["page"]) == ("scan.pdf", 1)
    code, again, stderr = run_job(env)
    assert (again["chunks_embedded"], again["files_unchanged"]) == (0, 3)


async def test_drive_images_and_scanned_pdfs_are_ingested(
    database_url: str, tmp_path: Path
) -> None:
    with DriveFake() as fake:
        root = fake.add_folder("Scans", fake.root_id)
        fake.add_file("whiteboard.png", root, image_bytes([VISITORS]))
        fake.add_file("scan.pdf", root, scanned_pdf_bytes([BACKUP]))
        env = drive_job(fake, database_url, tmp_path, root, "ocr/drive")
        code, stats, stderr = run_job(env)
        assert code == 0, stderr
        assert (stats["status"], stats["files_added"]) == ("success", 2)
        code, again, stderr = run_job(env)  # the changes feed: nothing new
        assert (again["chunks_embedded"], again["files_added"], again["files_updated"]) == (0, 0, 0)
    [hit, *_] = await search(database_url, "nightly snapshots backup policy", "ocr/drive")
    assert (hit.metadata["source"], hit.metadata["page"]) == ("scan.pdf", 1)
