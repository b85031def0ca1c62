"""The hybrid query's plan on a store big enough for the planner to care (invariant 6).

20,000 synthetic chunks (Zipf-distributed words, English stop words, 400-1,400 characters,
random 384-dimensional vectors) are copied straight into the knowledge store of a real
PostgreSQL 18 + pgvector, analysed, and given the HNSW index the sync engine builds. The tests
explain the statement ``KnowledgeStore.search`` runs (``search_statement``), not a copy of it:
the vector arm must be an HNSW index scan under its LIMIT, the text arm must go through the
``fts`` GIN index, with and without filters, and nothing may scan or rank the whole table.
Each plan is taken as the owner and as a login like the agent's (a member of the agent duty
role, with BYPASSRLS): row-level security (migration 0004) must not change it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragkeeper_knowledge import KnowledgeStore
from ragkeeper_knowledge.store import EF_SEARCH, SEARCH_SETTINGS_SQL, TEXT_MATCH_CAP

CHUNKS = 20_000
PER_DOCUMENT = 10
DIM = 384
PIPELINES = ["p-main"] * 5 + ["p-b"] * 3 + ["p-c"] * 2
MIME_TYPES = ["text/plain", "application/pdf", "text/html"]
# Words split on spaces: English stop words (about 45% of all words) and the syllables that
# make up the synthetic vocabulary.
_STOP_TEXT = (
    "the a an of to and in is it that for on with as are be this by or from at you your can "
    "will if not have do how i when what which all use"
)
_SYLLABLE_TEXT = "ka ri mo te lu sa ne vo pi da gre tor lin mas pel dor fen quo sta bri"
STOP_WORDS = _STOP_TEXT.split()
# Topic words placed at Zipf ranks 41-47: each is in several percent of the chunks.
TOPIC_WORDS = ["thermostat", "kestrel", "heating", "wiring", "schedule", "network", "display"]
SYLLABLES = _SYLLABLE_TEXT.split()
QUESTION = "How do I reset the Kestrel thermostat wiring?"


def _texts(n: int, seed: int = 7) -> Iterator[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < 4000:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    made = sorted(words)
    vocabulary = made[:40] + TOPIC_WORDS + made[40:]
    cumulative = list(np.cumsum(1.0 / np.arange(1, len(vocabulary) + 1)))
    for _ in range(n):
        drawn = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(60, 200))
        yield " ".join(rng.choice(STOP_WORDS) if rng.random() < 0.45 else w for w in drawn)


def _document(i: int) -> tuple[str, str, str]:
    """(document id, pipeline, mime type) of the document chunk ``i`` belongs to."""
    d = i // PER_DOCUMENT
    pipeline = PIPELINES[d % len(PIPELINES)]
    return f"{pipeline}:f{d}", pipeline, MIME_TYPES[d % len(MIME_TYPES)]


@pytest.fixture(scope="module")
async def big(store: KnowledgeStore) -> KnowledgeStore:
    await store.register_embedding_model("synthetic", DIM)
    vectors = np.random.default_rng(1).standard_normal((CHUNKS, DIM)).astype(np.float32)
    documents = {_document(i) for i in range(0, CHUNKS, PER_DOCUMENT)}
    chunks = [
        (doc_id, pipeline, i % PER_DOCUMENT, text, str(i), json.dumps({"mime_type": mime}), v)
        for i, (text, v) in enumerate(zip(_texts(CHUNKS), vectors, strict=True))
        for doc_id, pipeline, mime in [_document(i)]
    ]
    async with store.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "document_metadata",
            records=[(d, p, d.split(":", 1)[1], d, "v1", "h") for d, p, _ in documents],
            columns=["id", "pipeline_id", "source_id", "title", "version", "content_hash"],
        )
        await conn.copy_records_to_table(
            "documents",
            records=chunks,
            columns=[
                "document_id",
                "pipeline_id",
                "chunk_index",
                "content",
                "content_hash",
                "metadata",
                "embedding",
            ],
        )
        await conn.execute("ANALYZE documents; ANALYZE document_metadata")
    assert await store.ensure_vector_index()
    return store


def _query_vector(seed: int = 5) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).standard_normal(DIM)]


@pytest.fixture(scope="module")
async def agent_login(big: KnowledgeStore) -> str:
    """A login as roles.provision_logins makes the agent's: in the agent role, BYPASSRLS."""
    async with big.pool.acquire() as conn:
        group = await conn.fetchval("SELECT ragkeeper_admin.role_name('agent')")
        login = f"{group}_plan"
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", login
        ):
            await conn.execute(f'CREATE ROLE "{login}" LOGIN BYPASSRLS IN ROLE "{group}"')
    return login


AS_LOGIN = [pytest.param(False, id="owner"), pytest.param(True, id="agent-login")]


async def _explain(
    store: KnowledgeStore, options: str, login: str | None = None, **request: Any
) -> dict[str, Any]:
    """The search statement's plan, as the owner or as ``login``."""
    sql, args = await store.search_statement(QUESTION, _query_vector(), k=5, **request)
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(SEARCH_SETTINGS_SQL, str(EF_SEARCH))
        if login:
            await conn.execute("SELECT set_config('role', $1, true)", login)
            assert not await conn.fetchval("SELECT row_security_active('documents')")
        plan = await conn.fetchval(f"EXPLAIN ({options}, FORMAT JSON) {sql}", *args)
    return json.loads(plan)[0]["Plan"]  # type: ignore[no-any-return]


Node = dict[str, Any]


def _nodes(node: Node, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
    """Every plan node with its parent."""
    yield node, parent
    for child in node.get("Plans", []):
        yield from _nodes(child, node)


FILTERS = [
    pytest.param({}, id="no-filter"),
    pytest.param({"pipeline_id": "p-b"}, id="pipeline"),
    pytest.param({"metadata_filter": {"mime_type": "application/pdf"}}, id="metadata"),
    pytest.param(
        {"pipeline_id": "p-main", "metadata_filter": {"mime_type": "text/html"}}, id="both"
    ),
]


@pytest.mark.parametrize("as_login", AS_LOGIN)
@pytest.mark.parametrize("request_filters", FILTERS)
async def test_vector_arm_is_an_hnsw_scan_under_its_limit(
    big: KnowledgeStore, agent_login: str, request_filters: dict[str, Any], as_login: bool
) -> None:
    login = agent_login if as_login else None
    plan = await _explain(big, "COSTS true", login, **request_filters)
    hnsw = [(n, p) for n, p in _nodes(plan) if n.get("Index Name") == "documents_embedding_hnsw"]
    assert len(hnsw) == 1
    node, parent = hnsw[0]
    assert node["Node Type"] == "Index Scan"
    assert parent is not None and parent["Node Type"] == "Limit"  # the LIMIT sits on the index
    seq = [n for n, _ in _nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert not [n for n in seq if n.get("Relation Name") == "documents"]
    sorts = [n for n, _ in _nodes(plan) if n["Node Type"] == "Sort"]
    assert all(n["Plan Rows"] <= TEXT_MATCH_CAP for n in sorts), [n["Plan Rows"] for n in sorts]


@pytest.mark.parametrize("as_login", AS_LOGIN)
@pytest.mark.parametrize("request_filters", FILTERS)
async def test_text_arm_goes_through_the_fts_index(
    big: KnowledgeStore, agent_login: str, request_filters: dict[str, Any], as_login: bool
) -> None:
    plan = await _explain(big, "COSTS true", agent_login if as_login else None, **request_filters)
    fts = [n for n, _ in _nodes(plan) if n.get("Index Name") == "documents_fts"]
    # The AND match (English and simple configurations) and the per-term OR fallback.
    assert len(fts) == 3
    assert {n["Node Type"] for n in fts} == {"Bitmap Index Scan"}


async def test_a_long_question_ranks_a_capped_candidate_set(big: KnowledgeStore) -> None:
    """No scan of documents returns more than the cap, although the terms match half the table."""
    async with big.pool.acquire() as conn:
        matching = await conn.fetchval(
            "SELECT count(*) FROM documents"
            " WHERE fts @@ replace(websearch_to_tsquery('english', $1)::text, ' & ', ' | ')::tsquery",
            QUESTION,
        )
    assert matching > CHUNKS // 4
    plan = await _explain(big, "ANALYZE true")
    scans = [
        n for n, _ in _nodes(plan) if n.get("Relation Name") == "documents" and "Actual Rows" in n
    ]
    assert scans and all(n["Actual Rows"] <= TEXT_MATCH_CAP for n in scans), [
        (n["Node Type"], n["Actual Rows"]) for n in scans
    ]


async def test_hits_keep_their_shape_and_filters_filter(big: KnowledgeStore) -> None:
    hits = await big.search(QUESTION, _query_vector(), k=10)
    assert len(hits) == 10
    assert {h.vector_rank for h in hits if h.vector_rank} & {1, 2}
    assert {h.text_rank for h in hits if h.text_rank} & {1, 2}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert h.chunk_id > 0 and h.document_id.startswith(h.pipeline_id + ":")
        assert h.title == h.document_id and h.url is None and h.content
        assert h.vector_rank is not None or h.text_rank is not None
    hits = await big.search(QUESTION, _query_vector(), k=20, pipeline_id="p-c")
    assert len(hits) == 20 and {h.pipeline_id for h in hits} == {"p-c"}
    flt = {"mime_type": "application/pdf"}
    hits = await big.search(QUESTION, _query_vector(), k=20, metadata_filter=flt)
    assert len(hits) == 20 and all(h.metadata == flt for h in hits)


async def test_vector_arm_finds_the_exact_nearest_chunks(big: KnowledgeStore) -> None:
    """Vector ranks follow distance, numbered after the LIMIT (a stored vector finds itself)."""
    async with big.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, embedding FROM documents WHERE pipeline_id = 'p-b' ORDER BY id LIMIT 1"
        )
    assert row is not None
    hits = await big.search("", [float(x) for x in row["embedding"]], k=5, pipeline_id="p-b")
    assert hits[0].chunk_id == row["id"] and hits[0].vector_rank == 1
    assert [h.vector_rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(h.text_rank is None for h in hits)
