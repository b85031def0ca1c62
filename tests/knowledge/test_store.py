"""Knowledge-store invariants against a real PostgreSQL 18 + pgvector.

Each test names the invariant of docs/architecture.md ("Knowledge-store
invariants") it guards and would fail if it broke.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import asyncpg
import pytest

from ragkeeper_knowledge import ChunkWrite, DocumentWrite, KnowledgeStore, RowWrite, create_pool
from ragkeeper_knowledge.errors import EmbeddingModelMismatch
from ragkeeper_knowledge.migrate import current_revision, head_revision, migrate

from ..conftest import create_database
from ..support import vector_index_def

DIM = 8


def vec(*hot: int) -> list[float]:
    v = [0.0] * DIM
    for i in hot:
        v[i] = 1.0
    return v


def chunk(text: str, v: list[float], **meta: object) -> ChunkWrite:
    return ChunkWrite(text, hashlib.sha256(text.encode()).hexdigest(), v, {"title": "t", **meta})


def doc(pipeline: str, source: str, chunks: list[ChunkWrite], **kw: object) -> DocumentWrite:
    return DocumentWrite(
        pipeline_id=pipeline,
        source_id=source,
        title=kw.pop("title", source),  # type: ignore[arg-type]
        version=kw.pop("version", "v1"),  # type: ignore[arg-type]
        content_hash=kw.pop("content_hash", "h-" + source),  # type: ignore[arg-type]
        chunks=chunks,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module", autouse=True)
async def _model(store: KnowledgeStore) -> None:
    await store.register_embedding_model("test-model", DIM)


async def test_replace_document_is_atomic_on_failure(store: KnowledgeStore) -> None:
    """Invariant 1 (one transaction per document).

    A failure mid-write leaves the previous version intact.
    """
    await store.replace_document(
        doc("p-atomic", "a", [chunk("old one", vec(0)), chunk("old two", vec(1))])
    )
    bad = doc(
        "p-atomic",
        "a",
        [chunk("new one", vec(0)), chunk("new two", [1.0] * (DIM + 1))],
        version="v2",
    )
    with pytest.raises(asyncpg.PostgresError):
        await store.replace_document(bad)
    text = await store.read_document("p-atomic:a")
    assert text is not None
    assert text.content == "old one\n\nold two"
    assert (await store.stored_versions("p-atomic"))["a"].version == "v1"


async def test_replace_document_twice_does_not_duplicate(store: KnowledgeStore) -> None:
    """Invariant 1 (one transaction per document): a re-run replaces, never appends."""
    d = doc(
        "p-dup",
        "a",
        [chunk("alpha", vec(0)), chunk("beta", vec(1))],
        rows=[RowWrite("", 1, {"x": 1}), RowWrite("", 2, {"x": 2})],
        schema={"": ["x"]},
    )
    await store.replace_document(d)
    await store.replace_document(d)
    n_chunks = await store.pool.fetchval("SELECT count(*) FROM documents WHERE pipeline_id='p-dup'")
    n_rows = await store.pool.fetchval(
        "SELECT count(*) FROM document_rows WHERE dataset_id='p-dup:a'"
    )
    assert (n_chunks, n_rows) == (2, 2)
    assert await store.document_rows("p-dup:a") == [{"x": 1}, {"x": 2}]


async def test_state_is_saved_only_when_asked(store: KnowledgeStore) -> None:
    """Invariant 2 (cursor last), store side.

    The cursor is whatever was last saved, nothing implicit.
    """
    assert await store.get_state("p-state") is None
    await store.save_state("p-state", "local", {"token": "1"}, {"files_seen": 1})
    await store.replace_document(doc("p-state", "a", [chunk("gamma", vec(2))]))
    state = await store.get_state("p-state")
    assert state is not None and state.cursor == {"token": "1"}
    await store.save_state("p-state", "local", {"token": "2"}, None, success=False)
    state2 = await store.get_state("p-state")
    assert state2 is not None and state2.cursor == {"token": "2"}
    assert state2.last_success_time == state.last_success_time


async def test_pipelines_never_touch_each_other(store: KnowledgeStore) -> None:
    """Invariant 3 (one owner per document).

    Deleting or purging one pipeline leaves another's documents alone.
    """
    for p in ("team-a/src", "team-b/src"):
        await store.replace_document(doc(p, "same.txt", [chunk(f"{p} text", vec(3))]))
        await store.save_state(p, "local", {"n": 1})
    assert await store.delete_documents("team-a/src", ["same.txt"]) == 1
    assert await store.count_documents("team-b/src") == 1
    await store.replace_document(doc("team-a/src", "same.txt", [chunk("again", vec(3))]))
    assert await store.purge_pipeline("team-a/src") == 1
    assert await store.count_documents("team-a/src") == 0
    assert await store.get_state("team-a/src") is None
    assert await store.count_documents("team-b/src") == 1
    assert await store.get_state("team-b/src") is not None
    with pytest.raises(asyncpg.CheckViolationError):
        await store.pool.execute(
            "INSERT INTO document_metadata"
            " (id, pipeline_id, source_id, title, version, content_hash)"
            " VALUES ('team-b/src:x', 'team-a/src', 'x', 't', 'v', 'h')"
        )


async def test_existing_embeddings_are_found_by_chunk_hash(store: KnowledgeStore) -> None:
    """Invariant 4 (unchanged chunks are never re-embedded), store side.

    Stored vectors come back for known chunk texts only.
    """
    c = chunk("reusable paragraph", vec(4))
    await store.replace_document(doc("p-reuse", "a", [c]))
    found = await store.existing_embeddings([c.content_hash, "unknown-hash"])
    assert list(found) == [c.content_hash]
    assert found[c.content_hash] == pytest.approx(vec(4))


async def test_other_embedding_model_is_refused(store: KnowledgeStore) -> None:
    """Invariant 5 (one embedding space): a second model or dimension is a configuration error."""
    await store.register_embedding_model("test-model", DIM)  # same model: fine
    with pytest.raises(EmbeddingModelMismatch, match="test-model"):
        await store.register_embedding_model("other-model", DIM)
    with pytest.raises(EmbeddingModelMismatch):
        await store.register_embedding_model("test-model", DIM * 2)
    assert await store.embedding_model() == ("test-model", DIM)


async def test_vector_search_uses_hnsw_and_filters(store: KnowledgeStore) -> None:
    """Invariant 6 (hybrid search with an HNSW index).

    An HNSW cosine index exists and search filters by pipeline and metadata.
    """
    await store.ensure_vector_index()
    indexdef = await vector_index_def(store.pool)
    assert indexdef is not None and "hnsw" in indexdef and "vector_cosine_ops" in indexdef
    await store.replace_document(doc("p-s1", "x", [chunk("north wind", vec(5), lang="en")]))
    await store.replace_document(doc("p-s2", "x", [chunk("north wind", vec(5), lang="de")]))
    hits = await store.search("", vec(5), k=5, pipeline_id="p-s2")
    assert [h.pipeline_id for h in hits] == ["p-s2"]
    hits = await store.search("", vec(5), k=5, metadata_filter={"lang": "en"})
    assert {h.document_id for h in hits} == {"p-s1:x"}
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM documents ORDER BY embedding <=> $1::vector LIMIT 5", vec(5)
            )
        )
    assert "documents_embedding_hnsw" in plan


async def test_hybrid_search_finds_rare_codes_vectors_miss(store: KnowledgeStore) -> None:
    """Full text rescues exact tokens (error codes) that the vector ranks last."""
    await store.replace_document(
        doc("p-h", "codes", [chunk("Error ERR-4711 means the disk is full", vec(7))])
    )
    for i in range(5):
        await store.replace_document(
            doc("p-h", f"noise{i}", [chunk(f"unrelated text {i}", vec(6))])
        )
    hits = await store.search("what does ERR-4711 mean", vec(6), k=3, pipeline_id="p-h")
    assert hits[0].document_id == "p-h:codes"
    assert hits[0].text_rank == 1
    assert hits[0].vector_rank is not None and hits[0].vector_rank > 1


async def test_fusion_weights_turn_an_arm_off(store: KnowledgeStore) -> None:
    """Weights scale each arm in the fusion: (1, 0) is vector only, (0, 1) full text only."""
    await store.replace_document(
        doc("p-w", "codes", [chunk("Error ERR-4711 means the disk is full", vec(7))])
    )
    for i in range(5):
        await store.replace_document(doc("p-w", f"noise{i}", [chunk(f"unrelated {i}", vec(6))]))
    query = ("what does ERR-4711 mean", vec(6))
    vector_only = await store.search(*query, k=6, pipeline_id="p-w", weights=(1, 0))
    assert vector_only[0].document_id != "p-w:codes"
    assert [h.vector_rank for h in vector_only] == sorted(h.vector_rank or 0 for h in vector_only)
    text_only = await store.search(*query, k=6, pipeline_id="p-w", weights=(0, 1))
    assert [h.document_id for h in text_only] == ["p-w:codes"]  # nothing else matches the words
    leaning = await store.search(*query, k=6, pipeline_id="p-w", weights=(1, 0.01))
    assert leaning[0].document_id != "p-w:codes" and len(leaning) == 6
    with pytest.raises(ValueError, match="weights"):
        await store.search(*query, k=6, weights=(0, 0))


KESTREL_GUIDE = Path(__file__).parents[2] / "examples" / "docs" / "kestrel-quick-start.txt"


async def test_text_arm_ranks_rare_terms_first(store: KnowledgeStore) -> None:
    """Invariant 6: a rare query term counts for more than common ones.

    "reset" is in one section of the quick-start guide; "Kestrel" and "thermostat" are in the
    title of every section and all over the FAQ. The RESETTING section ranks first in the text
    arm although other chunks repeat the common words far more often.
    """
    title = "KESTREL K2 SMART THERMOSTAT - QUICK START GUIDE"
    sections = re.split(r"\n\n(?=[A-Z ]+\n)", KESTREL_GUIDE.read_text())[1:]
    await store.replace_document(
        doc("p-kestrel", "quick-start", [chunk(s, vec(2), title=title) for s in sections])
    )
    faq = [
        f"Kestrel thermostat question {i}: the Kestrel K2 thermostat and the Kestrel app. "
        "Does the Kestrel thermostat work with my Kestrel wall plate? The thermostat does."
        for i in range(12)
    ]
    await store.replace_document(
        doc("p-kestrel", "faq", [chunk(t, vec(2), title="Kestrel thermostat FAQ") for t in faq])
    )
    hits = await store.search("How do I reset the Kestrel thermostat?", vec(4), k=40)
    by_text = sorted((h for h in hits if h.text_rank is not None), key=lambda h: h.text_rank or 0)
    assert by_text[0].content.startswith("RESETTING"), [h.content[:30] for h in by_text[:3]]
    assert by_text[0].text_rank == 1


async def test_list_and_read_documents(store: KnowledgeStore) -> None:
    await store.replace_document(
        doc(
            "p-list",
            "guide.md",
            [chunk("part one", vec(0)), chunk("part two", vec(1))],
            title="Guide",
            url="file:///guide.md",
        )
    )
    docs = await store.list_documents(pipeline_id="p-list")
    assert [(d.id, d.title, d.chunk_count) for d in docs] == [("p-list:guide.md", "Guide", 2)]
    text = await store.read_document("p-list:guide.md", max_chars=8)
    assert text is not None and text.truncated and text.content == "part one"
    assert await store.read_document("p-list:missing") is None


async def test_migrations_run_once_under_concurrency(pg_admin_url: str) -> None:
    """Invariant 7 (migrations under an advisory lock).

    Many processes starting at once migrate exactly once.
    """
    url = await create_database(pg_admin_url, "concurrent_migrations")
    conns = [await asyncpg.connect(url) for _ in range(6)]
    try:
        revs = await asyncio.gather(*(migrate(c) for c in conns))
        assert set(revs) == {head_revision()}
        applied = await conns[0].fetchval("SELECT count(*) FROM ragkeeper_migrations.migrations")
        assert applied == len(
            list(__import__("ragkeeper_knowledge.migrate").migrate.MIGRATIONS_DIR.glob("*.sql"))
        )
        assert await current_revision(conns[0]) == head_revision()
    finally:
        for c in conns:
            await c.close()
    pool = await create_pool(url)  # idempotent on an already-migrated database
    await pool.close()


@pytest.mark.parametrize(("dimension", "opclass"), [(DIM, "vector_cosine_ops"), (2048, "halfvec")])
async def test_vector_index_is_built_once_after_the_first_load(
    pg_admin_url: str, dimension: int, opclass: str
) -> None:
    """The HNSW index comes after the first load (a bulk build), exactly once under concurrency."""
    pool = await create_pool(await create_database(pg_admin_url, f"vector_index_{dimension}"))
    try:
        fresh = KnowledgeStore(pool)
        await fresh.register_embedding_model("test-model", dimension)
        assert await vector_index_def(pool) is None  # no graph to grow row by row during the load
        one = [1.0] + [0.0] * (dimension - 1)
        await fresh.replace_document(doc("p-idx", "a", [chunk("first load", one)]))
        # Four syncs finishing at once: one builds, the others find it built.
        built = await asyncio.gather(
            *(KnowledgeStore(pool).ensure_vector_index() for _ in range(4))
        )
        assert sorted(built) == [False, False, False, True]
        indexdef = await vector_index_def(pool)
        assert indexdef is not None and "hnsw" in indexdef and opclass in indexdef
        assert await fresh.ensure_vector_index() is False
        hits = await fresh.search("first load", one, k=1)
        assert [h.document_id for h in hits] == ["p-idx:a"]
    finally:
        await pool.close()
