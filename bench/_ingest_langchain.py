"""The LangChain contender of ``bench/ingest.py``: the indexing API as its docs recommend.

``langchain_core.indexing.aindex`` with a SQL record manager and
``cleanup="incremental"`` keyed by ``source``, writing into
``langchain_postgres.PGVector`` on the same server (its own database). The
record manager is ``SQLRecordManager``, whose current home is
``langchain-classic`` (neither ``langchain_core.indexing`` nor
``langchain-postgres`` ships a SQL-backed one), so this module is optional:
``load_langchain_contender`` returns ``None`` when it is not installed.

How the LangChain side sees the corpus is how its users wire it: a loader
walks the folder and yields every file's chunks as ``Document``s (same
extractor, chunker and chunk metadata as ragkeeper) and the record manager
skips chunks whose hash (content + metadata) it already has. It has no notion
of an unchanged *file*, so every run reads, extracts and chunks everything.

PGVector gets an HNSW cosine index like the other two stores.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._ingest_env import ContenderBase, CountingEmbedder, PostgresHandle, corpus_files
from ragkeeper_rag.errors import FileSkipped

NAMESPACE = "pgvector/bench"


def langchain_available() -> bool:
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("langchain_classic", "langchain_postgres", "sqlalchemy", "psycopg")
    )


def load_langchain_contender(
    pg: PostgresHandle, root: Path, embedder: CountingEmbedder, *, size: int, overlap: int
) -> Any | None:
    """The contender, or ``None`` when ``langchain-classic`` is not installed."""
    if not langchain_available():
        return None
    return LangChainContender(pg, root, embedder, size=size, overlap=overlap)


def _embeddings_adapter(inner: CountingEmbedder) -> Any:
    """Our async embedder as a LangChain ``Embeddings`` (PGVector's async path calls ``a*``)."""
    from langchain_core.embeddings import Embeddings

    class RagkeeperEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise NotImplementedError("the benchmark drives PGVector in async mode")

        def embed_query(self, text: str) -> list[float]:
            raise NotImplementedError("the benchmark drives PGVector in async mode")

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return list(await inner.embed(texts))

        async def aembed_query(self, text: str) -> list[float]:
            return list(await inner.embed_query(text))

    return RagkeeperEmbeddings()


class LangChainContender(ContenderBase):
    name = "langchain"
    _engine: Any = None
    _store: Any = None
    _records: Any = None

    async def setup(self) -> None:
        from langchain_classic.indexes import (  # type: ignore[import-not-found, unused-ignore]
            SQLRecordManager,
        )
        from langchain_postgres import PGVector
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        await self.pg.create_database("bench_langchain")
        self._engine = create_async_engine(self.pg.sqlalchemy_url("bench_langchain"))
        self._store = PGVector(
            _embeddings_adapter(self.embedder),
            connection=self._engine,
            embedding_length=self.embedder.dimension,
            collection_name="bench",
            use_jsonb=True,
            async_mode=True,
        )
        await self._store.acreate_collection()
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE INDEX IF NOT EXISTS langchain_pg_embedding_hnsw "
                    "ON langchain_pg_embedding USING hnsw (embedding vector_cosine_ops)"
                )
            )
        self._records = SQLRecordManager(NAMESPACE, engine=self._engine, async_mode=True)
        await self._records.acreate_schema()

    def _documents(self) -> Iterator[Any]:
        from langchain_core.documents import Document

        for path in corpus_files(self.root):
            try:
                prepared = self.prepare(path)
            except FileSkipped:
                continue
            for chunk in prepared.chunks:
                yield Document(page_content=chunk.text, metadata=chunk.metadata)

    async def sync(self) -> str:
        from langchain_core.indexing import aindex

        result = await aindex(
            self._documents(),
            self._records,
            self._store,
            cleanup="incremental",
            source_id_key="source",
            key_encoder="sha256",
        )
        return (
            f"added={result['num_added']} updated={result['num_updated']} "
            f"skipped={result['num_skipped']} deleted={result['num_deleted']}"
        )

    async def stored_chunks(self) -> int:
        from sqlalchemy import text

        async with self._engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM langchain_pg_embedding"))
        return int(count or 0)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
