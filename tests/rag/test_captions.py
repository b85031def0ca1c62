"""Captions of images from a vision model (``RAG_IMAGE_CAPTIONS``, docs/ocr.md "Captions").

The job runs as a process against a fake OpenAI-compatible vision API served on 127.0.0.1
(``tests/rag/fake_vision.py``), which counts what it is sent: a caption is asked once per image
content and model, never again for an unchanged image or one with the same bytes; a failure
leaves the image indexed with its OCR text, in ``errors``, and the next run asks again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import asyncpg
import pytest
from PIL import Image

from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding import EmbeddingConfig, create_embedder
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS
from ragkeeper_rag.captions import Captioner, CaptionFailed, CaptionRefused, Captions, image_mime
from ragkeeper_rag.settings import RagSettings
from ragkeeper_rag.sources.local import LocalSource
from ragkeeper_rag.sync import SyncEngine
from tests.rag.corpus import image_bytes
from tests.rag.fake_vision import MODEL, FakeVision, caption_for, vision_server
from tests.rag.test_cli import job_env, run_job
from tests.rag.test_ocr import VISITORS, search
from tests.support import free_port

LEAVE = "Annual leave is 25 days per calendar year."


def photo(colour: tuple[int, int, int]) -> bytes:
    """A picture with no text in it: OCR reads nothing, only a caption says what it shows."""
    out = io.BytesIO()
    image = Image.new("RGB", (320, 240), colour)
    image.paste((20, 20, 20), (100, 60, 220, 180))
    image.save(out, format="PNG")
    return out.getvalue()


def caption_env(database_url: str, tmp_path: Path, pipeline: str, base_url: str) -> dict[str, str]:
    return job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_ID=pipeline,
        RAG_WATCH_DIRECTORY=str(tmp_path / "docs"),
        RAG_IMAGE_CAPTIONS="true",
        RAG_CAPTION_BASE_URL=base_url,
        RAG_CAPTION_MODEL=MODEL,
        RAG_CAPTION_API_KEY="vision-key",  # pragma: allowlist secret
    )


async def job(env: dict[str, str]) -> dict:
    """One run of the job (a process) while the fake keeps answering in this event loop."""
    code, stats, stderr = await asyncio.to_thread(run_job, env)
    assert code == 0, stderr
    return stats


async def chunks_of(database_url: str, pipeline: str, source: str) -> list[asyncpg.Record]:
    """The chunks of one file, in order: their index, text and ``caption`` metadata."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT chunk_index, content, metadata ->> 'caption' AS caption FROM documents "
            "WHERE pipeline_id = $1 AND metadata ->> 'source' = $2 ORDER BY chunk_index",
            pipeline,
            source,
        )
    finally:
        await conn.close()


async def test_captions_make_images_searchable_and_are_asked_once_per_content(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    whiteboard, red = image_bytes([VISITORS]), photo((200, 40, 40))
    assert caption_for(whiteboard) != caption_for(red)
    (folder / "whiteboard.png").write_bytes(whiteboard)
    (folder / "red.png").write_bytes(red)
    (folder / "copy-of-red.png").write_bytes(red)  # the same bytes: one request for both
    (folder / "notes.md").write_text(f"# Leave\n\n{LEAVE}\n")
    async with vision_server() as (fake, base_url):
        env = caption_env(database_url, tmp_path, "captions/on", base_url)
        plain = {k: v for k, v in env.items() if not k.startswith(("RAG_IMAGE", "RAG_CAPTION"))}
        first = await job(plain)  # captions off: OCR only
        assert (first["status"], first["files_added"], fake.calls) == ("success", 4, 0)

        stats = await job(env)  # captions on: each stored image is read again, once
        assert (stats["status"], stats["files_updated"], stats["files_unchanged"]) == (
            "success",
            3,
            1,
        )
        assert fake.calls == 2
        assert set(fake.authorizations) == {"Bearer vision-key"}
        [message] = fake.requests[0]["messages"]
        assert [part["type"] for part in message["content"]] == ["text", "image_url"]
        assert fake.requests[0]["model"] == MODEL

        again = await job(env)
        assert (again["chunks_embedded"], again["files_unchanged"], fake.calls) == (0, 4, 2)

        (folder / "whiteboard-again.png").write_bytes(whiteboard)  # bytes captioned before
        copied = await job(env)
        assert (copied["files_added"], copied["chunks_embedded"], fake.calls) == (1, 0, 2)

    # the red photo has no text: its caption is what finds it
    [hit, *_] = await search(database_url, caption_for(red), "captions/on")
    assert hit.metadata["source"] in {"red.png", "copy-of-red.png"}
    assert hit.content == caption_for(red)
    assert (hit.metadata["caption"], hit.metadata["heading"]) == (True, "Image caption")
    # the whiteboard keeps its OCR text, and its caption follows it as its own chunk
    rows = await chunks_of(database_url, "captions/on", "whiteboard.png")
    assert [(r["chunk_index"], r["caption"]) for r in rows] == [(0, None), (1, "true")]
    assert VISITORS.split()[0] in rows[0]["content"]
    assert rows[1]["content"] == caption_for(whiteboard)

    pool = await create_pool(database_url, max_size=1)
    try:  # the cache: one row per content and model
        cached = await KnowledgeStore(pool).existing_captions(
            [_sha256(whiteboard), _sha256(red)], MODEL
        )
    finally:
        await pool.close()
    assert cached == {_sha256(whiteboard): caption_for(whiteboard), _sha256(red): caption_for(red)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_failed_caption_keeps_the_ocr_text_and_the_next_run_asks_again(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    whiteboard = image_bytes([VISITORS], width=1300)  # bytes no other test had captioned
    (folder / "whiteboard.png").write_bytes(whiteboard)
    (folder / "notes.md").write_text(f"# Leave\n\n{LEAVE}\n")
    down = caption_env(
        database_url, tmp_path, "captions/down", f"http://127.0.0.1:{free_port()}/v1"
    )

    stats = await job(down)  # nobody listens: connection refused, retried, given up
    assert (stats["status"], stats["files_added"], stats["files_failed"]) == ("partial", 2, 1)
    [error] = stats["errors"]
    assert error["file"] == "whiteboard.png"
    assert error["error"].startswith("caption not written: ")
    [hit, *_] = await search(database_url, "visitors badge front desk", "captions/down")
    assert (hit.metadata["source"], hit.metadata["ocr"]) == ("whiteboard.png", True)
    assert "caption" not in hit.metadata

    async with vision_server(FakeVision(fail_with=400)) as (fake, base_url):
        refused = await job(caption_env(database_url, tmp_path, "captions/down", base_url))
        assert fake.calls == 1  # a 4xx is not retried
        [error] = refused["errors"]
        assert "HTTP 400: scripted failure 400" in error["error"]
        assert (refused["status"], refused["files_updated"]) == ("partial", 1)

    async with vision_server() as (fake, base_url):
        env = caption_env(database_url, tmp_path, "captions/down", base_url)
        stats = await job(env)
        assert (stats["status"], stats["files_updated"], stats["files_unchanged"]) == (
            "success",
            1,
            1,
        )
        assert (fake.calls, stats["chunks_embedded"]) == (1, 1)  # only the caption is new
        again = await job(env)
        assert (fake.calls, again["chunks_embedded"], again["files_unchanged"]) == (1, 0, 2)

    rows = await chunks_of(database_url, "captions/down", "whiteboard.png")
    assert [r["caption"] for r in rows] == [None, "true"]  # its OCR chunk and one caption
    assert rows[1]["content"] == caption_for(whiteboard)


def test_captions_on_without_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    env = job_env(
        "postgresql://nobody@127.0.0.1:1/none",
        tmp_path,
        RAG_PIPELINE_ID="captions/config",
        RAG_WATCH_DIRECTORY=str(tmp_path),
        RAG_IMAGE_CAPTIONS="true",
        RAG_CAPTION_BASE_URL="http://127.0.0.1:1/v1",
    )
    code, stats, _ = run_job(env)
    assert code == 2
    assert stats["status"] == "failed"
    assert "RAG_IMAGE_CAPTIONS=true needs RAG_CAPTION_MODEL" in stats["error"]
    code, stats, _ = run_job({**env, "RAG_CAPTION_BASE_URL": "", "RAG_CAPTION_MODEL": "m"})
    assert code == 2
    assert "needs RAG_CAPTION_BASE_URL" in stats["error"]


def test_caption_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RagSettings()
    assert (settings.image_captions, settings.caption_timeout_seconds) == (False, 60.0)
    monkeypatch.setenv("RAG_IMAGE_CAPTIONS", "true")
    monkeypatch.setenv("RAG_CAPTION_BASE_URL", "http://vision:8000/v1")
    monkeypatch.setenv("RAG_CAPTION_MODEL", "qwen2-vl")
    monkeypatch.setenv("RAG_CAPTION_API_KEY", "sk-secret")  # pragma: allowlist secret
    monkeypatch.setenv("RAG_CAPTION_TIMEOUT_SECONDS", "12.5")
    settings = RagSettings()
    assert settings.caption_api_key is not None
    assert "sk-secret" not in repr(settings)
    assert (settings.caption_model, settings.caption_timeout_seconds) == ("qwen2-vl", 12.5)


class _Store:
    """The two cache methods of the knowledge store, in memory."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    async def existing_captions(self, hashes: list[str], model: str) -> dict[str, str]:
        return {h: self.rows[h, model] for h in hashes if (h, model) in self.rows}

    async def save_caption(self, content_hash: str, model: str, caption: str) -> None:
        self.rows.setdefault((content_hash, model), caption)


async def test_the_captioner_retries_what_may_heal_and_redacts_its_key() -> None:
    red = photo((10, 200, 10))
    async with vision_server(FakeVision(fail_with=503)) as (fake, base_url):
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        captioner = Captioner(base_url, MODEL, api_key="k-123", max_retries=2, sleep=sleep)
        try:
            with pytest.raises(CaptionFailed, match="still failing after 3 attempt"):
                await captioner.caption(red)
            assert (fake.calls, len(waits)) == (3, 2)
            fake.fail_with = 401
            with pytest.raises(CaptionFailed, match="HTTP 401") as failed:
                await captioner.caption(red)
            assert "k-123" not in str(failed.value) and "k-123" not in repr(captioner)
            fake.fail_with = None
            store = _Store()
            captions = Captions(store, captioner)  # type: ignore[arg-type]
            got = await asyncio.gather(*(captions(_sha256(red), red) for _ in range(3)))
            assert got == [caption_for(red)] * 3
            assert fake.calls == 5  # three files with these bytes, one request
            assert await captions(_sha256(red), red) == caption_for(red)  # from the store
            assert fake.calls == 5
            await captions.aclose()
        finally:
            await captioner.aclose()


def test_images_are_sent_with_the_type_of_their_content() -> None:
    assert image_mime(image_bytes([LEAVE])) == "image/png"
    assert image_mime(image_bytes([LEAVE], "JPEG")) == "image/jpeg"
    assert image_mime(image_bytes([LEAVE], "WEBP")) == "image/webp"
    with pytest.raises(CaptionRefused, match="not a PNG, JPEG or WebP"):
        image_mime(b"GIF89a")


async def test_an_image_too_large_to_send_is_reported_once_and_never_sent(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    big = image_bytes([VISITORS], width=1250)
    (folder / "big.png").write_bytes(big)
    source = LocalSource(folder, extensions=SUPPORTED_EXTENSIONS)
    hashing = create_embedder(EmbeddingConfig(provider="hashing"))  # the jobs' of this module
    async with vision_server() as (fake, base_url):
        captioner = Captioner(base_url, MODEL, max_image_bytes=len(big) - 1)
        try:
            engine = SyncEngine(store, hashing, captioner=captioner)
            stats = await engine.sync_once(source, "captions/big")
            assert (stats.status, stats.files_added, fake.calls) == ("partial", 1, 0)
            [error] = stats.errors
            assert error["error"] == (
                f"caption not asked for: image of {len(big)} bytes "
                f"(over the {len(big) - 1} a caption request carries)"
            )
            again = await engine.sync_once(source, "captions/big")  # not retried: same bytes
            assert (again.status, again.files_unchanged, fake.calls) == ("success", 1, 0)
        finally:
            await captioner.aclose()
    [vector] = await hashing.embed(["visitors badge"])
    [hit, *_] = await store.search("visitors badge", vector, k=1, pipeline_id="captions/big")
    assert hit.metadata["source"] == "big.png" and "caption" not in hit.metadata
