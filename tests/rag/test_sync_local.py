"""The sync engine over a local folder, in-process, against the embedded Postgres."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.embedding import HashingEmbedder
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS
from ragkeeper_rag.sources.base import FetchedContent, ScanResult, SourceFile
from ragkeeper_rag.sources.local import LocalSource
from ragkeeper_rag.sync import ChunkingOptions, SyncEngine

from ..support import vector_index_def
from .corpus import markdown_doc, paragraph, write_mixed_corpus


class CountingEmbedder(HashingEmbedder):
    """The real hashing embedder, counting every text it is asked to embed."""

    def __init__(self) -> None:
        super().__init__(dimension=64)
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return await super().embed(texts)


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


def engine(store: KnowledgeStore, embedder: CountingEmbedder, size: int = 600) -> SyncEngine:
    return SyncEngine(store, embedder, chunking=ChunkingOptions(size=size, overlap=80))


def source(root: Path) -> LocalSource:
    return LocalSource(root, extensions=SUPPORTED_EXTENSIONS)


async def snapshot(store: KnowledgeStore, pipeline_id: str) -> dict[str, object]:
    docs = await store.pool.fetch(
        "SELECT source_id, content_hash FROM document_metadata WHERE pipeline_id=$1 ORDER BY 1",
        pipeline_id,
    )
    chunks = await store.pool.fetch(
        "SELECT document_id, chunk_index, content_hash FROM documents WHERE pipeline_id=$1 ORDER BY 1, 2",
        pipeline_id,
    )
    rows = await store.pool.fetch(
        "SELECT r.dataset_id, r.sheet, r.row_number, r.row_data::text FROM document_rows r "
        "JOIN document_metadata m ON m.id = r.dataset_id WHERE m.pipeline_id=$1 ORDER BY 1, 2, 3",
        pipeline_id,
    )
    return {
        "docs": [tuple(r) for r in docs],
        "chunks": [tuple(r) for r in chunks],
        "rows": [tuple(r) for r in rows],
    }


async def test_first_sync_then_no_change_embeds_nothing(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    write_mixed_corpus(tmp_path / "docs", 21)
    eng = engine(store, embedder)
    first = await eng.sync_once(source(tmp_path / "docs"), "t/first")
    assert first.status == "success", first.errors
    assert (first.files_seen, first.files_added, first.files_failed) == (21, 21, 0)
    assert first.chunks_embedded > 21
    embedded = len(embedder.texts)
    assert await vector_index_def(store.pool) is not None  # built after the first load

    await store.pool.execute("DROP INDEX documents_embedding_hnsw")
    again = await eng.sync_once(source(tmp_path / "docs"), "t/first")
    assert (again.files_unchanged, again.files_added, again.files_updated) == (21, 0, 0)
    assert again.chunks_embedded == 0
    assert await vector_index_def(store.pool) is not None  # a lost index is rebuilt by the next run
    # nothing is embedded on the second run (the dimension probe goes through embed_query)
    assert embedder.texts[embedded:] == []
    assert again.documents_total == 21


async def test_tabular_files_land_in_document_rows_with_schema(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    write_mixed_corpus(tmp_path / "docs", 7)  # one of each format
    await engine(store, embedder).sync_once(source(tmp_path / "docs"), "t/rows")
    schema = await store.pool.fetchval(
        "SELECT schema::text FROM document_metadata WHERE pipeline_id='t/rows' AND source_id LIKE '%.xlsx'"
    )
    assert '"Q1": ["region", "sales"]' in schema and '"Q2"' in schema
    csv_rows = await store.document_rows("t/rows:dir0/doc00005.csv")
    assert csv_rows[0]["sku"] == "SKU-5-0" and len(csv_rows) == 5


async def test_editing_one_paragraph_reembeds_only_changed_chunks(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    rng = random.Random(3)
    root = tmp_path / "docs"
    root.mkdir()
    paras = [paragraph(rng, 40) for _ in range(40)]
    doc = root / "long.md"
    doc.write_text("# Long\n\n" + "\n\n".join(paras))
    eng = engine(store, embedder)
    first = await eng.sync_once(source(root), "t/edit")
    total_chunks = first.chunks_embedded
    assert total_chunks >= 20

    paras[20] = paragraph(random.Random(99), 40)
    doc.write_text("# Long\n\n" + "\n\n".join(paras))
    before = len(embedder.texts)
    second = await eng.sync_once(source(root), "t/edit")
    assert second.files_updated == 1
    assert second.chunks_embedded <= 3, second
    assert second.chunks_reused >= total_chunks - 3
    assert len(embedder.texts) - before == second.chunks_embedded


async def test_rename_and_delete_propagate_without_reembedding(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(markdown_doc(random.Random(1)))
    (root / "b.md").write_text(markdown_doc(random.Random(2)))
    eng = engine(store, embedder)
    await eng.sync_once(source(root), "t/rename")

    (root / "a.md").rename(root / "renamed.md")
    (root / "b.md").unlink()
    stats = await eng.sync_once(source(root), "t/rename")
    assert (stats.files_added, stats.files_deleted, stats.chunks_embedded) == (1, 2, 0)
    assert stats.chunks_reused > 0
    assert [d.id for d in await store.list_documents(pipeline_id="t/rename")] == [
        "t/rename:renamed.md"
    ]


async def test_touched_file_with_same_content_is_not_reextracted(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    f = root / "a.txt"
    f.write_text("same words " * 50)
    eng = engine(store, embedder)
    await eng.sync_once(source(root), "t/touch")
    f.write_text("same words " * 50)  # new mtime, same bytes
    stats = await eng.sync_once(source(root), "t/touch")
    assert (stats.files_unchanged, stats.files_updated, stats.chunks_embedded) == (1, 0, 0)
    # the new version token was remembered: a third run does not even read the file
    versions = await store.stored_versions("t/touch")
    st = f.stat()
    assert versions["a.txt"].version == f"{st.st_size}:{st.st_mtime_ns}"


async def test_bad_files_are_reported_and_the_rest_is_kept(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.md").write_text(markdown_doc(random.Random(5)))
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01")
    junk = random.Random(1)
    (root / "junk.txt").write_bytes(bytes(junk.randrange(256) for _ in range(4096)))
    (root / "empty.md").write_bytes(b"")
    (root / "huge-line.txt").write_text("word " * 400_000)
    (root / "loop").symlink_to(root, target_is_directory=True)
    stats = await engine(store, embedder).sync_once(source(root), "t/bad")
    failed = {e["file"] for e in stats.errors}
    assert {"corrupt.pdf", "junk.txt", "loop"} <= failed
    assert stats.status == "partial"
    ids = {d.id for d in await store.list_documents(pipeline_id="t/bad")}
    assert {"t/bad:good.md", "t/bad:huge-line.txt"} <= ids
    assert "t/bad:corrupt.pdf" not in ids


async def test_symlink_outside_root_is_refused(
    store: KnowledgeStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ingest me")
    (root / "link.txt").symlink_to(secret)
    stats = await engine(store, embedder).sync_once(source(root), "t/escape")
    assert stats.errors == [
        {"file": "link.txt", "error": "symlink points outside the watched directory"}
    ]
    assert await store.count_documents("t/escape") == 0


class MovableSource:
    """A source whose files keep their id when renamed (like Drive): the engine's contract only."""

    pipeline_type = "test"

    def __init__(self) -> None:
        self.files: dict[str, tuple[SourceFile, bytes]] = {}

    def put(self, sid: str, name: str, data: bytes, version: str) -> None:
        f = SourceFile(
            source_id=sid,
            path=f"folder/{name}",
            title=name,
            mime_type="text/plain",
            version=version,
            url=f"https://example.test/{sid}/{name}",
        )
        self.files[sid] = (f, data)

    async def scan(self, cursor: object) -> ScanResult:
        return ScanResult(files=[f for f, _ in self.files.values()], full=True)

    async def fetch(self, file: SourceFile) -> FetchedContent:
        return FetchedContent(
            self.files[file.source_id][1], "text/plain", file.title.rsplit(".", 1)[1]
        )

    async def aclose(self) -> None:
        return None


async def test_rename_with_same_version_updates_title_path_and_url(
    store: KnowledgeStore, embedder: CountingEmbedder
) -> None:
    src = MovableSource()
    src.put("id1", "old name.txt", b"plain words without a title", "v1")
    src.put("id2", "titled.md", b"# Real Title\n\nbody", "v1")
    eng = engine(store, embedder)
    await eng.sync_once(src, "t/move")
    src.put("id1", "new name.txt", b"plain words without a title", "v1")
    src.put("id2", "renamed.md", b"# Real Title\n\nbody", "v1")
    stats = await eng.sync_once(src, "t/move")
    assert (stats.files_unchanged, stats.chunks_embedded) == (2, 0)
    docs = {d.id: d for d in await store.list_documents(pipeline_id="t/move")}
    assert docs["t/move:id1"].title == "new name.txt"
    assert docs["t/move:id1"].path == "folder/new name.txt"
    assert docs["t/move:id1"].url == "https://example.test/id1/new name.txt"
    assert docs["t/move:id2"].title == "Real Title"  # a title from the content stays
