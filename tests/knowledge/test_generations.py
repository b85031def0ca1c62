"""Invariant 8 (a generation per pipeline): every committed change to a pipeline's documents
adds one to its generation in the same transaction; nothing else does.

Against a real PostgreSQL 18: the store's own write paths, a rolled-back transaction, a
transaction touching many rows, concurrent writers of one pipeline, and the ingestion role.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ragkeeper_knowledge import KnowledgeStore

from .test_store import chunk, doc, vec

PIPE, OTHER = "gen/a", "gen/b"


@pytest.fixture(scope="module", autouse=True)
async def _model(store: KnowledgeStore) -> None:
    await store.register_embedding_model("test-model", 8)


async def test_every_write_path_advances_its_pipeline_only(store: KnowledgeStore) -> None:
    assert await store.generation(PIPE) == 0
    before_all = await store.generation()
    steps = [
        lambda: store.replace_document(doc(PIPE, "one", [chunk("alpha", vec(0))]), fresh=True),
        lambda: store.replace_document(doc(PIPE, "one", [chunk("beta", vec(1))], version="v2")),
        lambda: store.update_version(PIPE, "one", "v3", path="/moved/one.md"),
        lambda: store.delete_documents(PIPE, ["one"]),
        lambda: store.replace_document(doc(PIPE, "two", [chunk("gamma", vec(2))]), fresh=True),
        lambda: store.purge_pipeline(PIPE),
    ]
    for n, step in enumerate(steps, start=1):
        await step()
        assert await store.generation(PIPE) == n
        assert await store.generation(OTHER) == 0
        assert await store.generation() == before_all + n
    # A purged pipeline keeps counting: its next document is generation 7, never a past value.
    await store.replace_document(doc(PIPE, "three", [chunk("delta", vec(3))]), fresh=True)
    assert await store.generation(PIPE) == 7


async def test_what_changes_nothing_advances_nothing(store: KnowledgeStore) -> None:
    await store.replace_document(doc(OTHER, "x", [chunk("x", vec(4))]), fresh=True)
    start = await store.generation(OTHER)
    assert await store.delete_documents(OTHER, ["not-there"]) == 0
    await store.update_version(OTHER, "not-there", "v9")
    await store.save_state(OTHER, "local", {"cursor": 1})
    await store.search("x", vec(4), k=3, pipeline_id=OTHER)
    assert await store.generation(OTHER) == start


async def test_a_rolled_back_change_is_not_counted(store: KnowledgeStore) -> None:
    await store.replace_document(doc(OTHER, "r", [chunk("r", vec(5))]), fresh=True)
    start = await store.generation(OTHER)
    async with store.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM document_metadata WHERE pipeline_id = $1", OTHER)
        await tx.rollback()
    assert await store.generation(OTHER) == start


async def test_one_transaction_counts_once_per_pipeline(store: KnowledgeStore) -> None:
    for name in ("m1", "m2", "m3"):
        await store.replace_document(doc("gen/many", name, [chunk(name, vec(6))]), fresh=True)
    await store.replace_document(doc("gen/many2", "n", [chunk("n", vec(7))]), fresh=True)
    many, many2 = await store.generation("gen/many"), await store.generation("gen/many2")
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE document_metadata SET updated_at = now() "
            "WHERE pipeline_id IN ('gen/many', 'gen/many2')"
        )
    assert await store.generation("gen/many") == many + 1
    assert await store.generation("gen/many2") == many2 + 1


async def test_concurrent_writers_of_one_pipeline_each_count(store: KnowledgeStore) -> None:
    """Counted at commit under the counter's row lock: no two commits share a value."""
    start = await store.generation("gen/par")
    writes = [
        store.replace_document(doc("gen/par", f"p{i}", [chunk(f"p{i}", vec(i % 8))]), fresh=True)
        for i in range(12)
    ]
    await asyncio.gather(*writes)
    assert await store.generation("gen/par") == start + 12


async def test_the_counter_needs_no_privilege_of_the_writers(store: KnowledgeStore) -> None:
    """Only the agent may read the table; the trigger's function writes with its owner's rights
    (the ingestion login's run in test_roles advances it)."""
    async with store.pool.acquire() as conn:
        grants = await conn.fetch(
            "SELECT duty, privileges FROM ragkeeper_admin.duty_grants "
            "WHERE on_object = 'TABLE public.pipeline_generations'"
        )
        assert [tuple(g) for g in grants] == [("agent", "SELECT")]
        security = await conn.fetchrow(
            "SELECT prosecdef, proconfig FROM pg_proc WHERE proname = 'bump_pipeline_generation'"
        )
        assert (
            security["prosecdef"]
            and "search_path=pg_catalog, public, pg_temp" in (security["proconfig"])
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            # Two generations for one pipeline cannot exist.
            await conn.execute(
                "INSERT INTO pipeline_generations (pipeline_id, generation) VALUES ($1, 99)", PIPE
            )
