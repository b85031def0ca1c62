"""Decompression bombs through the real job: each one is a reported file, the run goes on.

Every bomb is generated here, small on disk, next to ordinary documents. The job runs as
Kubernetes runs it (``python -m ragkeeper_rag`` into Postgres); the run must end
``partial`` (exit 0) with each bomb in ``errors`` naming the cap that stopped it, and the
ordinary documents indexed.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from .bombs import (
    csv_rows,
    docx_with_paragraphs,
    pdf_of,
    slow_pdf,
    text_lines,
    xlsx_with_rows,
)
from .corpus import write_mixed_corpus
from .test_cli import job_env, run_job

NORMAL_FILES = 7  # one of each format: md, txt, html, pdf, docx, csv, xlsx


async def indexed(url: str, pipeline_id: str) -> set[str]:
    """Paths of the pipeline's documents that have chunks."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT m.path FROM document_metadata m "
            "JOIN documents d ON d.document_id = m.id WHERE m.pipeline_id = $1",
            pipeline_id,
        )
    finally:
        await conn.close()
    return {r["path"] for r in rows}


def bomb_run(
    database_url: str, tmp_path: Path, bombs: dict[str, bytes], **settings: str
) -> tuple[dict, dict[str, str]]:
    """Run the job over ordinary documents plus ``bombs``; returns (stats, errors by file)."""
    docs = tmp_path / "docs"
    write_mixed_corpus(docs, NORMAL_FILES)
    for name, data in bombs.items():
        (docs / name).write_bytes(data)
    env = job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID=f"ns/{tmp_path.name}",
        RAG_WATCH_DIRECTORY=str(docs),
        **settings,
    )
    code, stats, stderr = run_job(env, timeout=180)
    assert code == 0, stderr
    assert stats["status"] == "partial"
    assert (stats["files_added"], stats["files_failed"]) == (NORMAL_FILES, len(bombs)), stats
    errors = {e["file"]: e["error"] for e in stats["errors"]}
    assert set(errors) == set(bombs)
    return stats, errors


async def test_bombs_are_refused_by_the_default_caps(database_url: str, tmp_path: Path) -> None:
    bombs = {
        "million-rows.xlsx": xlsx_with_rows(1_000_000),  # 230 KB -> 1,000,000 rows
        "huge-body.docx": docx_with_paragraphs(1_000_000),  # 245 KB -> 78 MB of XML
        "many-parts.docx": docx_with_paragraphs(1, extra_entries=20_000),
        "pages.pdf": pdf_of(3_000, text_lines(40)),  # 470 KB -> 3,000 pages, 12 MB of text
        "rows.csv": csv_rows(150_000),
        "long.txt": b"lorem ipsum dolor sit amet " * 200_000,  # 5.4 million characters
    }
    stats, errors = bomb_run(database_url, tmp_path, bombs)
    expected = {
        "million-rows.xlsx": "RAG_MAX_COMPRESSION_RATIO=200",
        "huge-body.docx": "RAG_MAX_COMPRESSION_RATIO=200",
        "many-parts.docx": "RAG_MAX_ZIP_ENTRIES=10000",
        "pages.pdf": "RAG_MAX_PAGES_PER_FILE=2000",
        "rows.csv": "RAG_MAX_ROWS_PER_FILE=100000",
        "long.txt": "RAG_MAX_TEXT_CHARS_PER_FILE=5000000",
    }
    for name, cap in expected.items():
        assert errors[name].startswith("refused: ") and cap in errors[name], errors[name]
    assert len(await indexed(database_url, f"ns/{tmp_path.name}")) == NORMAL_FILES


async def test_the_other_caps_and_the_worker_bounds(database_url: str, tmp_path: Path) -> None:
    """Total size, text and chunks caps; a worker out of memory; a file over the timeout."""
    bombs = {
        "big-body.docx": docx_with_paragraphs(120_000),  # 9 MB of XML, ratio allowed below
        "text.pdf": pdf_of(300, text_lines(40)),  # stops reading at the text cap
        "many-chunks.md": b"\n\n".join(b"Paragraph %d of many. " % i * 8 for i in range(400)),
        "memory.csv": csv_rows(3_000_000),  # rows allowed below: ~1.4 GB of Python rows
        "slow.pdf": slow_pdf(),
    }
    _, errors = bomb_run(
        database_url,
        tmp_path,
        bombs,
        RAG_MAX_COMPRESSION_RATIO="1000000",
        RAG_MAX_UNCOMPRESSED_BYTES=str(4 * 1024 * 1024),
        RAG_MAX_TEXT_CHARS_PER_FILE="200000",
        RAG_MAX_CHUNKS_PER_FILE="40",
        RAG_MAX_ROWS_PER_FILE="100000000",
        RAG_WORKER_MEMORY_BYTES=str(384 * 1024 * 1024),  # reached in about a second
        # Wide margins, so load does not decide: the slow PDF needs 18 s or more, the memory
        # bomb reaches its limit within a few seconds even when retried alone after the kill.
        RAG_FILE_TIMEOUT_SECONDS="12",
    )
    expected = {
        "big-body.docx": f"RAG_MAX_UNCOMPRESSED_BYTES={4 * 1024 * 1024}",
        "text.pdf": "RAG_MAX_TEXT_CHARS_PER_FILE=200000",
        "many-chunks.md": "RAG_MAX_CHUNKS_PER_FILE=40",
        "memory.csv": f"ran out of memory (over RAG_WORKER_MEMORY_BYTES={384 * 1024 * 1024})",
        "slow.pdf": "RAG_FILE_TIMEOUT_SECONDS=12",
    }
    for name, cap in expected.items():
        assert errors[name].startswith("refused: ") and cap in errors[name], errors[name]
    assert len(await indexed(database_url, f"ns/{tmp_path.name}")) == NORMAL_FILES
