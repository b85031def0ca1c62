"""The contenders of ``bench/ingest.py`` that need nothing beyond the bench group.

* ``RagkeeperContender``: the real ``SyncEngine`` over the real ``LocalSource``
  into a ``KnowledgeStore`` — exactly what ``python -m ragkeeper_rag`` runs.
* ``NaiveContender``: the naive baseline: a known-files map of modification
  times; every file whose mtime moved has its rows deleted, all of its chunks
  embedded again, and its chunk rows inserted one statement (one autocommit) at
  a time.

The LangChain contender lives in ``_ingest_langchain.py`` because it needs
``langchain-classic`` (home of ``SQLRecordManager``), which is optional.

Every contender has ``name``, ``embedder`` (a ``CountingEmbedder``) and the
async methods ``setup``, ``sync`` (one timed re-sync; returns a one-line
summary), ``stored_chunks`` (sanity check after the runs) and ``close``.
"""

from __future__ import annotations

import json
from typing import Protocol

import asyncpg
from pgvector.asyncpg import register_vector

from bench._ingest_env import ContenderBase, CountingEmbedder, corpus_files
from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.extraction import SUPPORTED_EXTENSIONS
from ragkeeper_rag.errors import FileSkipped
from ragkeeper_rag.sources.local import LocalSource
from ragkeeper_rag.sync import ChunkingOptions, SyncEngine
from ragkeeper_rag.workers import resolve_workers

PIPELINE_ID = "bench/local"


class Contender(Protocol):
    name: str
    embedder: CountingEmbedder

    async def setup(self) -> None: ...

    async def sync(self) -> str: ...

    async def stored_chunks(self) -> int: ...

    async def close(self) -> None: ...


class RagkeeperContender(ContenderBase):
    """ragkeeper's sync engine, configured as the ingestion job configures it."""

    name = "ragkeeper"
    _pool: asyncpg.Pool | None = None
    _engine: SyncEngine | None = None
    # RAG_EXTRACT_WORKERS of the job (0: one process per available CPU, at most 2)
    extract_workers = 0

    async def setup(self) -> None:
        url = await self.pg.create_database("bench_ragkeeper")
        self._pool = await create_pool(url, max_size=5)
        chunking = ChunkingOptions(size=self.size, overlap=self.overlap)
        self._engine = SyncEngine(
            KnowledgeStore(self._pool),
            self.embedder,
            chunking=chunking,
            extract_workers=resolve_workers(self.extract_workers),
        )

    async def sync(self) -> str:
        assert self._engine is not None
        source = LocalSource(self.root, extensions=SUPPORTED_EXTENSIONS)
        stats = await self._engine.sync_once(source, PIPELINE_ID)
        if stats.chunks_embedded != self.embedder.texts:
            raise RuntimeError(
                f"stats say {stats.chunks_embedded} chunks embedded, "
                f"the embedder saw {self.embedder.texts}"
            )
        return (
            f"status={stats.status} added={stats.files_added} updated={stats.files_updated} "
            f"unchanged={stats.files_unchanged} failed={stats.files_failed} "
            f"embedded={stats.chunks_embedded} reused={stats.chunks_reused}"
        )

    async def stored_chunks(self) -> int:
        assert self._pool is not None
        return int(await self._pool.fetchval("SELECT count(*) FROM documents"))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


_NAIVE_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE document_metadata (
    id text PRIMARY KEY, title text, url text, schema text,
    created_at timestamp DEFAULT now()
);
CREATE TABLE document_rows (
    id serial PRIMARY KEY, dataset_id text REFERENCES document_metadata (id), row_data jsonb
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY, content text, metadata jsonb, embedding vector({dimension:d})
);
CREATE INDEX documents_embedding_hnsw ON documents USING hnsw (embedding vector_cosine_ops);
CREATE TABLE rag_pipeline_state (
    pipeline_id text PRIMARY KEY, known_files jsonb NOT NULL, last_check_time timestamp
);
"""


class NaiveContender(ContenderBase):
    """The naive baseline: mtime map, delete + re-embed whole files, row-by-row inserts.

    Same HNSW cosine index on the chunk vectors as the other two, so the
    difference measured is the strategy, not the schema.
    """

    name = "naive"
    _conn: asyncpg.Connection | None = None

    async def setup(self) -> None:
        url = await self.pg.create_database("bench_naive")
        self._conn = await asyncpg.connect(url)
        await self._conn.execute(_NAIVE_SCHEMA.format(dimension=self.embedder.dimension))
        await register_vector(self._conn)

    async def sync(self) -> str:
        conn = self._conn
        assert conn is not None
        raw = await conn.fetchval(
            "SELECT known_files FROM rag_pipeline_state WHERE pipeline_id = $1", PIPELINE_ID
        )
        known: dict[str, int] = json.loads(raw) if raw else {}
        current = {
            path.relative_to(self.root).as_posix(): path.stat().st_mtime_ns
            for path in corpus_files(self.root)
        }
        changed = [rel for rel, mtime in current.items() if known.get(rel) != mtime]
        deleted = [rel for rel in known if rel not in current]
        failed = 0
        for rel in deleted:
            await self._delete_file(conn, rel)
        for rel in changed:
            if not await self._process_file(conn, rel):
                failed += 1
        await conn.execute(
            "INSERT INTO rag_pipeline_state (pipeline_id, known_files, last_check_time) "
            "VALUES ($1, $2::jsonb, now()) ON CONFLICT (pipeline_id) DO UPDATE "
            "SET known_files = EXCLUDED.known_files, last_check_time = now()",
            PIPELINE_ID,
            json.dumps(current),
        )
        return f"changed={len(changed)} deleted={len(deleted)} failed={failed}"

    @staticmethod
    async def _delete_file(conn: asyncpg.Connection, rel: str) -> None:
        await conn.execute("DELETE FROM documents WHERE metadata ->> 'file_id' = $1", rel)
        await conn.execute("DELETE FROM document_rows WHERE dataset_id = $1", rel)
        await conn.execute("DELETE FROM document_metadata WHERE id = $1", rel)

    async def _process_file(self, conn: asyncpg.Connection, rel: str) -> bool:
        await conn.execute("DELETE FROM documents WHERE metadata ->> 'file_id' = $1", rel)
        await conn.execute("DELETE FROM document_rows WHERE dataset_id = $1", rel)
        try:
            prepared = self.prepare(self.root / rel)
        except FileSkipped:
            return False
        texts = [c.text for c in prepared.chunks]
        vectors = await self.embedder.embed(texts) if texts else []
        for chunk, vector in zip(prepared.chunks, vectors, strict=True):
            await conn.execute(
                "INSERT INTO documents (content, metadata, embedding) VALUES ($1, $2::jsonb, $3)",
                chunk.text,
                json.dumps({**chunk.metadata, "file_id": rel}),
                vector,
            )
        schema = {t.sheet: list(t.columns) for t in prepared.tables} if prepared.tables else None
        await conn.execute(
            "INSERT INTO document_metadata (id, title, url, schema) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, schema = EXCLUDED.schema",
            rel,
            prepared.title,
            (self.root / rel).absolute().as_uri(),
            None if schema is None else json.dumps(schema),
        )
        for table in prepared.tables:
            for row in table.rows:
                await conn.execute(
                    "INSERT INTO document_rows (dataset_id, row_data) VALUES ($1, $2::jsonb)",
                    rel,
                    json.dumps(row, default=str),
                )
        return True

    async def stored_chunks(self) -> int:
        assert self._conn is not None
        return int(await self._conn.fetchval("SELECT count(*) FROM documents"))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
